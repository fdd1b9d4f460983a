//! The store, per operation, with the key's hash computed once per operation as the server does.
//!
//! Dimensions: 16-byte keys, 64-byte values; 100,000 keys preloaded (about 1,560 per shard over
//! 64 shards); lookups cycle through the preloaded keys in a scattered order (a stride of 7,919
//! keys, coprime to their number), as a server's clients would ask for them, rather than in
//! the order they were stored, which a hardware prefetcher would follow.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use upcache::store::{Store, SHARDS};

const N: usize = 100_000;

fn make_keys(prefix: &str, n: usize) -> Vec<[u8; 16]> {
    (0..n)
        .map(|i| {
            *format!("{prefix}:{i:012}")
                .as_bytes()
                .first_chunk::<16>()
                .unwrap()
        })
        .collect()
}

fn loaded(keys: &[[u8; 16]]) -> Store {
    let mut s = Store::new(ahash::RandomState::with_seeds(1, 2, 3, 4));
    for k in keys {
        let h = s.hash(k);
        s.set(h, k, &[b'v'; 64]);
    }
    s
}

/// The `i`-th key to ask for.
fn scattered(i: usize) -> usize {
    i * 7_919 % N
}

fn store_ops(c: &mut Criterion) {
    let (keys, counters) = (make_keys("key", N), make_keys("ctr", 1024));
    // Counters of their own: incrementing a key that holds a 64-byte value would only fail.
    let mut store = loaded(&keys);
    let mut g = c.benchmark_group(format!("store/{N}-keys/{SHARDS}-shards"));
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("get-hit", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            let k = &keys[scattered(i)];
            let h = store.hash(k);
            black_box(store.get(h, k).map(|e| e.value().len()))
        })
    });
    g.bench_function("get-miss", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            let mut k = keys[scattered(i)];
            k[0] = b'X';
            let h = store.hash(&k);
            black_box(store.get(h, &k).is_some())
        })
    });
    g.bench_function("set-overwrite", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            let k = &keys[scattered(i)];
            let h = store.hash(k);
            black_box(store.set(h, k, &[b'w'; 64]).value().len())
        })
    });
    g.bench_function("incr", |b| {
        b.iter(|| {
            i = (i + 1) % counters.len();
            let k = &counters[i];
            let h = store.hash(k);
            black_box(store.incr(h, k, 1).map(|(n, _)| n).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, store_ops);
criterion_main!(benches);
