//! What choosing an upstream server costs per request: `Pool::select` under round-robin and
//! consistent (Ketama) selection, with 2 and 8 servers, for keys of the size a canonical
//! resource key has (host, path, query). The baseline is round-robin over the same servers,
//! measured in the same run: the README quotes consistent selection as a ratio to it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use precond::upstream::Pool;

fn pool(servers: usize, selection: &str) -> Pool {
    let list: Vec<String> = (0..servers)
        .map(|i| format!("\"127.0.0.{}:8080\"", i + 1))
        .collect();
    let text = format!(
        "[[upstream]]\nname = \"api\"\nservers = [{}]\nselection = \"{selection}\"\n\n[[route]]\nupstream = \"api\"\n",
        list.join(", ")
    );
    let c = precond::config::parse(&text).expect("bench config is valid");
    Pool::new(&c.upstreams[0]).expect("literal addresses need no resolution")
}

fn keys() -> Vec<Vec<u8>> {
    (0..1024)
        .map(|i| format!("api.example.com/api/v1/orders/{i}?expand=lines").into_bytes())
        .collect()
}

fn selection(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("select");
    for servers in [2, 8] {
        for kind in ["round_robin", "consistent"] {
            let p = pool(servers, kind);
            let mut i = 0;
            g.bench_function(BenchmarkId::new(kind, servers), |b| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    black_box(p.select(black_box(&keys[i]), &[]))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
