//! Resident memory per cached resource, with 1 million resources, beside moka's own bookkeeping.
//!
//! `cargo bench --bench memory`: in a fresh child process each, builds
//! - precond's store with N resources (each with a current and a replaced tag, as after two GETs
//!   that showed a new version), and
//! - the baseline: a bare moka `Cache<u64, ()>` with the same capacity, TTL and eviction listener
//!   (what any store that keeps moka as its bound pays per entry before storing anything),
//!
//! and prints the growth of the resident set divided by N, beside the average key length.
//! `PRECOND_MEMORY_N` overrides N.

mod common;

use std::time::Duration;

use common::*;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Builds one variant in this process and prints `bytes-per-resource average-key-length`.
fn measure(variant: &str, n: usize) {
    let before = rss_bytes();
    let key_len = (0..n).map(|i| key(i).len()).sum::<usize>() as f64 / n as f64;
    match variant {
        "precond" => {
            let store = precond_store(n);
            let per = (rss_bytes() - before) as f64 / n as f64;
            assert!(store
                .get(&rkey(&path(0)), precond::identity::Principal::SHARED)
                .is_some());
            println!("{per:.0} {key_len:.0}");
        }
        "moka" => {
            let cache: moka::sync::Cache<u64, ()> = moka::sync::Cache::builder()
                .max_capacity(n as u64 * 2)
                .time_to_live(Duration::from_secs(3600))
                .eviction_listener(|_, _, _| {})
                .build();
            for i in 0..n as u64 {
                cache.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), ());
            }
            cache.run_pending_tasks();
            let per = (rss_bytes() - before) as f64 / n as f64;
            assert_eq!(cache.entry_count(), n as u64);
            println!("{per:.0} 0");
        }
        _ => panic!("unknown variant {variant}"),
    }
}

/// Runs one variant in a child process (a fresh heap) and reads its figures back.
fn child(variant: &str) -> (f64, f64) {
    let exe = std::env::current_exe().expect("bench executable");
    let out = std::process::Command::new(exe)
        .args(std::env::args().skip(1))
        .env("PRECOND_MEMORY_VARIANT", variant)
        .output()
        .expect("run the bench child");
    assert!(out.status.success(), "{variant}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().expect(v));
    (it.next().expect("bytes"), it.next().expect("key length"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches: nothing to list here
    }
    // `cargo bench` passes --bench; under `cargo test` this is a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("PRECOND_MEMORY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 1_000 });
    if let Ok(variant) = std::env::var("PRECOND_MEMORY_VARIANT") {
        return measure(&variant, n);
    }
    let (per, key_len) = child("precond");
    let (moka, _) = child("moka");
    println!(
        "memory: {n} resources, {per:.0} bytes resident per resource (keys average {key_len:.0} bytes; {:.0} bytes beyond the key)",
        per - key_len
    );
    println!(
        "memory: baseline, bare moka Cache<u64, ()> with the same capacity, TTL and listener: {moka:.0} bytes per entry; precond's own part beyond the key: {:.0} bytes",
        per - key_len - moka
    );
}
