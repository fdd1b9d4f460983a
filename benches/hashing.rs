//! Hashing and shard choice: the one ahash per key that the store and hub reuse.
//!
//! Dimensions: key sizes 16, 64 and 1024 bytes; one key per iteration.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use upcache::store::Store;

fn hashing(c: &mut Criterion) {
    let store = Store::new(ahash::RandomState::with_seeds(1, 2, 3, 4));
    let mut g = c.benchmark_group("hash");
    for size in [16usize, 64, 1024] {
        let key = vec![b'k'; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("ahash+shard", size), &key, |b, key| {
            b.iter(|| {
                let h = store.hash(black_box(key));
                black_box(Store::shard_of(h))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);
