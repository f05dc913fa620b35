//! Why a BLAKE3 record is gathered into one buffer before it is hashed (`envelope/record.rs`,
//! `blake3_tag`): the same tag, over `meta (9 bytes) | data`, computed the two ways.
//!
//! Run: `cargo bench --bench mac_layout`
//!
//! - `in_place/<size>`: `meta`, then `data`, each fed to the hasher where it lies. The 9 bytes in
//!   front shift every 1 KiB chunk of `data` off the grid BLAKE3 hashes in parallel.
//! - `gathered/<size>`: both copied into one buffer (kept between calls), then hashed in one
//!   update: the copy is part of the measured time.
//!
//! The ratio `gathered / in_place` per size is what the choice rests on (docs/benchmarks.md).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const META: [u8; 9] = [0, 0, 0, 1, 0, 1, 0, 0, 0];
const SUB: [u8; 32] = [7; 32];

fn layout(c: &mut Criterion) {
    let mut group = c.benchmark_group("blake3_record");
    let mut buf = Vec::with_capacity(64 * 1024 + 64);
    for size in [2048usize, 4096, 16 * 1024, 64 * 1024] {
        let data: Vec<u8> = (0..size).map(|i| (i * 131 % 251) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("in_place", size), &data, |b, data| {
            b.iter(|| {
                let mut h = blake3::Hasher::new_keyed(&SUB);
                h.update(&META);
                h.update(black_box(data));
                h.finalize()
            })
        });
        group.bench_with_input(BenchmarkId::new("gathered", size), &data, |b, data| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(&META);
                buf.extend_from_slice(black_box(data));
                let mut h = blake3::Hasher::new_keyed(&SUB);
                h.update(&buf);
                h.finalize()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, layout);
criterion_main!(benches);
