//! Frame tag sign and verify next to raw SHA-256 of the same bytes, at 20 B, 1 KiB and
//! 16 KiB payloads. After the run it prints verify/SHA-256 and sign/SHA-256 throughput ratios
//! read from criterion's estimates (target: verify ≥ 80 % of SHA-256 at 16 KiB).
//!
//! Run: `cargo bench -p tether-protocol --bench tag`
use std::path::PathBuf;
use std::time::Duration;

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use sha2::{Digest, Sha256};
use tether_protocol::keys::MacKey;

const SIZES: [(usize, &str); 3] = [(20, "20B"), (1024, "1KiB"), (16 * 1024, "16KiB")];

fn bench(c: &mut Criterion) {
    let key = MacKey::new(&[7; 32]);
    let mut group = c.benchmark_group("tag");
    for (size, label) in SIZES {
        let payload = vec![0x42u8; size];
        let tag = key.tag(b"", &payload);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("sha256", label), &payload, |b, p| {
            b.iter(|| Sha256::digest(black_box(p)))
        });
        group.bench_with_input(BenchmarkId::new("sign", label), &payload, |b, p| {
            b.iter(|| key.tag(b"", black_box(p)))
        });
        group.bench_with_input(BenchmarkId::new("verify", label), &payload, |b, p| {
            b.iter(|| assert!(key.verify(b"", black_box(p), &tag)))
        });
    }
    group.finish();
}

/// Mean time per iteration in ns from criterion's saved estimates.
fn mean_ns(dir: &std::path::Path, name: &str, label: &str) -> Option<f64> {
    let path = dir.join("tag").join(name).join(label).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("criterion");
    println!("\nratio of throughput to raw SHA-256 of the same bytes (1.00 = as fast as SHA-256):");
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "size", "sha256 ns", "sign ns", "verify ns", "sign", "verify"
    );
    for (size, label) in SIZES {
        let (Some(sha), Some(sign), Some(verify)) =
            (mean_ns(&dir, "sha256", label), mean_ns(&dir, "sign", label), mean_ns(&dir, "verify", label))
        else {
            println!("{label:>8} (no estimates: run without a filter)");
            continue;
        };
        println!(
            "{:>8} {:>12.1} {:>12.1} {:>12.1} {:>8.2} {:>8.2}   ({} bytes)",
            label,
            sha,
            sign,
            verify,
            sha / sign,
            sha / verify,
            size
        );
    }
}
