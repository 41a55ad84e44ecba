//! Resident memory per cached resource, with 1 million resources.
//!
//! `cargo bench --bench memory`: builds precond's store with N resources (each with a current
//! and a replaced tag, as after a GET, a write and a GET), and prints the growth of the process's
//! resident set divided by N, beside the average key length.

mod common;

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
    let before = rss_bytes();
    let store = precond_store(n);
    let after = rss_bytes();
    let key_len = (0..n).map(|i| key(i).len()).sum::<usize>() as f64 / n as f64;
    let per = (after - before) as f64 / n as f64;
    println!(
        "memory: {n} resources, {per:.0} bytes resident per resource (keys average {key_len:.0} bytes; {:.0} bytes beyond the key)",
        per - key_len
    );
    assert!(store.get(&key(0)).is_some());
}
