//! Decoding and encoding, per frame kind.
//!
//! Dimensions: 16-byte keys, 64-byte values (and 4 KiB values for the large case); one frame
//! per iteration; frames decoded from a buffer already in memory (no I/O).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use upcache::protocol::{
    decode_incoming, decode_reply, decode_request, Limits, Push, PushKind, Reply, Request,
};

const KEY: &[u8; 16] = b"key:000000000042";

fn requests(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Elements(1));
    let value64 = [b'v'; 64];
    let value4k = [b'v'; 4096];
    let cases: [(&str, Request<'_>); 4] = [
        ("get/16", Request::Get { key: KEY }),
        (
            "set/16+64",
            Request::Set {
                key: KEY,
                value: &value64,
            },
        ),
        (
            "set/16+4096",
            Request::Set {
                key: KEY,
                value: &value4k,
            },
        ),
        ("incr/16", Request::Incr { key: KEY, delta: 1 }),
    ];
    let limits = Limits::default();
    for (name, req) in cases {
        let mut buf = Vec::new();
        req.encode(1, &mut buf);
        g.bench_with_input(BenchmarkId::new("decode", name), &buf, |b, buf| {
            b.iter(|| decode_request(black_box(buf), &limits).unwrap())
        });
        let mut out = Vec::with_capacity(8192);
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                out.clear();
                black_box(req).encode(1, &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn replies_and_pushes(c: &mut Criterion) {
    let mut g = c.benchmark_group("reply");
    g.throughput(Throughput::Elements(1));
    let value = [b'v'; 64];
    let limits = Limits::unlimited();
    for (name, reply) in [
        ("value/64", Reply::Value(&value)),
        ("done", Reply::Done),
        ("int", Reply::Int(42)),
    ] {
        let mut buf = Vec::new();
        reply.encode(7, &mut buf);
        g.bench_with_input(BenchmarkId::new("decode", name), &buf, |b, buf| {
            b.iter(|| decode_reply(black_box(buf), &limits).unwrap())
        });
    }
    let mut buf = Vec::new();
    Push {
        kind: PushKind::Set,
        id: 1,
        key: KEY,
        value: &value,
        arg: 0,
    }
    .encode(&mut buf);
    g.bench_with_input(
        BenchmarkId::new("decode", "push-set/16+64"),
        &buf,
        |b, buf| b.iter(|| decode_incoming(black_box(buf), &limits).unwrap()),
    );
    g.finish();
}

criterion_group!(benches, requests, replies_and_pushes);
criterion_main!(benches);
