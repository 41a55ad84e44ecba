//! One whole guard decision (parse the header, find the resource, compare), precond's fast path
//! beside naive baselines measured in the same run.
//!
//! `cargo bench --bench decision` (add `-- --quick` for a shorter run).

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use precond::identity::Principal;
use precond::precondition::{guard, Conditional, Decision, Method, Policy};
use precond::store::guard_decision;

const SAMPLE: usize = 4096;
/// Callers per resource in the principal cases.
const USERS: usize = 2;
const SHARED: Principal = Principal::SHARED;

/// A request sample: paths and If-Match values for random resources.
struct Sample {
    paths: Vec<String>,
    keys: Vec<String>,
    headers: Vec<String>,
}

fn sample(n: usize, case: &str) -> Sample {
    let mut lcg = Lcg(42);
    let mut s = Sample {
        paths: vec![],
        keys: vec![],
        headers: vec![],
    };
    for _ in 0..SAMPLE {
        let i = lcg.next_below(n);
        let (p, h) = match case {
            "match" => (path(i), current_tag(i)),
            "stale" => (path(i), replaced_tag(i)),
            "list8" => (
                path(i),
                (0..7)
                    .map(|j| format!("\"other-{j}\", "))
                    .collect::<String>()
                    + &current_tag(i),
            ),
            "weak" => (path(i), format!("W/{}", current_tag(i))),
            "star" => (path(i), "*".to_string()),
            "unknown" => (path(n + i), current_tag(i)),
            _ => unreachable!(),
        };
        s.keys.push(format!("{HOST}{p}"));
        s.paths.push(p);
        s.headers.push(h);
    }
    s
}

fn cond<'a>(h: &'a [&'a [u8]]) -> Conditional<&'a [&'a [u8]]> {
    Conditional {
        method: Method::Put,
        if_match: h,
        if_none_match: &[],
        if_modified_since: &[],
        if_unmodified_since: &[],
        no_cache: false,
    }
}

/// Resource counts: the full sizes under `cargo bench` (or the comma-separated list in
/// `PRECOND_BENCH_SIZES`), a small one under `cargo test`.
fn sizes() -> Vec<usize> {
    if let Ok(list) = std::env::var("PRECOND_BENCH_SIZES") {
        return list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
    }
    if std::env::args().any(|a| a == "--bench") {
        vec![1_000, 1_000_000]
    } else {
        vec![1_000]
    }
}

fn decisions(c: &mut Criterion) {
    for n in sizes() {
        let store = precond_store(n);
        let pstore = precond_store_principals(n, USERS);
        let pkey = principal_key();
        let auths: Vec<String> = (0..USERS).map(authorization).collect();
        let moka = moka_baseline(&store, n);
        let mutex = mutex_baseline(n);
        let rwlock = rwlock_baseline(n);
        let mut g = c.benchmark_group(format!("decision/{n}"));
        g.measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1));
        for case in ["match", "stale", "list8", "weak", "star", "unknown"] {
            let s = sample(n, case);
            // Sanity: the fast path decides what the case says.
            let expect_412 = case == "stale";
            {
                let h = [s.headers[0].as_bytes()];
                let key = rkey(&s.paths[0]);
                let d = guard_decision(&store, &key, SHARED, &cond(&h), Policy::Superseded);
                assert_eq!(
                    matches!(d, Decision::PreconditionFailed(_)),
                    expect_412,
                    "{case}"
                );
            }
            g.bench_function(BenchmarkId::new("precond", case), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % SAMPLE;
                    let h = [s.headers[i].as_bytes()];
                    let key = rkey(&s.paths[i]);
                    black_box(guard_decision(
                        &store,
                        &key,
                        SHARED,
                        &cond(&h),
                        Policy::Superseded,
                    ))
                })
            });
            // Principals on: each resource was read by `USERS` callers, and every request
            // derives its caller's principal from its `Authorization` value first.
            {
                let h = [s.headers[0].as_bytes()];
                let key = rkey(&s.paths[0]);
                let who = principal_of_user(&pkey, 0);
                let d = guard_decision(&pstore, &key, who, &cond(&h), Policy::Superseded);
                assert_eq!(
                    matches!(d, Decision::PreconditionFailed(_)),
                    expect_412,
                    "{case} with principals"
                );
            }
            // The fast path with principals on: a partitioned store, the request's principal
            // (derived once per request, before the decision) in the key.
            let whos: Vec<Principal> = (0..SAMPLE)
                .map(|i| principal_of_user(&pkey, i % USERS))
                .collect();
            g.bench_function(BenchmarkId::new("precond_principal", case), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % SAMPLE;
                    let h = [s.headers[i].as_bytes()];
                    let key = rkey(&s.paths[i]);
                    black_box(guard_decision(
                        &pstore,
                        &key,
                        whos[i],
                        &cond(&h),
                        Policy::Superseded,
                    ))
                })
            });
            // What a request pays before the decision: its principal, from its `Authorization`
            // value (the default sources: `authorization`, then `cookie`, absent here).
            if case == "match" {
                g.bench_function("principal_of", |b| {
                    let mut i = 0;
                    b.iter(|| {
                        i = (i + 1) % USERS;
                        let mut hasher = pkey.hasher();
                        hasher.add(0, auths[i].as_bytes());
                        black_box(hasher.finish())
                    })
                });
            }
            g.bench_function(BenchmarkId::new("precond_lookup_only", case), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % SAMPLE;
                    let key = rkey(&s.paths[i]);
                    black_box(store.with(&key, SHARED, |r| r.is_some()))
                })
            });
            g.bench_function(BenchmarkId::new("moka_get", case), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % SAMPLE;
                    let h = [s.headers[i].as_bytes()];
                    let r = moka.get(&s.keys[i]);
                    black_box(guard(&cond(&h), r.as_deref(), Policy::Superseded))
                })
            });
            g.bench_function(BenchmarkId::new("mutex_hashmap_split", case), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % SAMPLE;
                    let m = mutex.lock().unwrap();
                    black_box(naive_is_stale(m.get(&s.keys[i]), &s.headers[i]))
                })
            });
            g.bench_function(BenchmarkId::new("rwlock_hashmap_split", case), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % SAMPLE;
                    let m = rwlock.read().unwrap();
                    black_box(naive_is_stale(m.get(&s.keys[i]), &s.headers[i]))
                })
            });
        }
        g.finish();
    }
}

/// Times `iters` calls of `read` while `writers` threads each call `write(i, version)` for
/// random resources `i` in a loop.
fn timed_under_churn<W>(
    iters: u64,
    writers: usize,
    n: usize,
    write: W,
    mut read: impl FnMut(usize),
) -> Duration
where
    W: Fn(usize, u64) + Send + Sync + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let write = Arc::new(write);
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (write, stop) = (write.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut lcg = Lcg(7 + w as u64);
                let mut v = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    v += 1;
                    write(lcg.next_below(n), v);
                }
            })
        })
        .collect();
    let start = Instant::now();
    for it in 0..iters {
        read(it as usize % SAMPLE);
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    elapsed
}

/// Readers while `writers` threads churn the store: each write replaces a random resource's record
/// (a GET that showed a new `Last-Modified`, same current tag), so the index and moka are written
/// and old records retired while the readers' decisions (a matching `If-Match`) stay the same.
fn churn(c: &mut Criterion) {
    let n = if sizes().len() > 1 { 100_000 } else { 1_000 };
    let store = Arc::new(precond_store(n));
    let mutex = Arc::new(mutex_baseline(n));
    let s = Arc::new(sample(n, "match"));
    let mut g = c.benchmark_group(format!("churn/{n}"));
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for writers in [0usize, 1, 2] {
        g.bench_with_input(BenchmarkId::new("precond", writers), &writers, |b, &w| {
            b.iter_custom(|iters| {
                let st = store.clone();
                let write = move |i: usize, v: u64| {
                    let date = httpdate::fmt_http_date(
                        std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000 + v),
                    );
                    learn_get_dated(&st, &path(i), &current_tag(i), Some(&date));
                };
                timed_under_churn(iters, w, n, write, |i| {
                    let h = [s.headers[i].as_bytes()];
                    let key = rkey(&s.paths[i]);
                    black_box(guard_decision(
                        &store,
                        &key,
                        SHARED,
                        &cond(&h),
                        Policy::Superseded,
                    ));
                })
            })
        });
        g.bench_with_input(
            BenchmarkId::new("mutex_hashmap_split", writers),
            &writers,
            |b, &w| {
                b.iter_custom(|iters| {
                    let m = mutex.clone();
                    let write = move |i: usize, _: u64| {
                        let (k, t) = (key(i), current_tag(i));
                        m.lock().unwrap().insert(k, t);
                    };
                    timed_under_churn(iters, w, n, write, |i| {
                        let m = mutex.lock().unwrap();
                        black_box(naive_is_stale(m.get(&s.keys[i]), &s.headers[i]));
                    })
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, decisions, churn);
criterion_main!(benches);
