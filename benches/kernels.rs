//! Criterion benches of the statistical kernels at 1e3, 1e5 and 1e6 values
//! per sample, and of summary updates and merges:
//!
//!     cargo bench --bench kernels                 # everything
//!     cargo bench --bench kernels -- ks_2samp     # one group
//!
//! Both samples are normal with a small shift (seeded); sizes are per sample.
//! Throughput is reported in values (both samples together for tests).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mlwatch::stats::chi_square::{Divergence, chi2_contingency};
use mlwatch::stats::detectors::Adwin;
use mlwatch::stats::distinct::Kmv;
use mlwatch::stats::ks::{KsMethod, ks_2samp};
use mlwatch::stats::mann_whitney::{MwuMethod, mannwhitneyu};
use mlwatch::stats::sample::{BottomK, ValueSample};
use mlwatch::stats::sketch::{QuantileSketch, ks_sketch, psi_sketch};
use mlwatch::stats::summary::{Histogram, Moments};
use mlwatch::stats::{Alternative, distance, t_test};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

fn samples() -> Vec<(Vec<f64>, Vec<f64>)> {
    let mut rng = StdRng::seed_from_u64(7);
    let normal = Normal::new(0.0, 1.0).expect("normal");
    SIZES
        .iter()
        .map(|&n| {
            let a: Vec<f64> = (0..n).map(|_| normal.sample(&mut rng)).collect();
            let b: Vec<f64> = (0..n).map(|_| normal.sample(&mut rng) + 0.05).collect();
            (a, b)
        })
        .collect()
}

type Kernel = fn(&[f64], &[f64]);

fn two_sample_tests(c: &mut Criterion) {
    let data = samples();
    let kernels: [(&str, Kernel); 7] = [
        ("ks_2samp", |a, b| {
            black_box(ks_2samp(a, b, Alternative::TwoSided, KsMethod::Auto).ok());
        }),
        ("welch_ttest", |a, b| {
            black_box(t_test::ttest_ind(a, b, false, Alternative::TwoSided, 0.95).ok());
        }),
        ("mannwhitneyu", |a, b| {
            black_box(mannwhitneyu(a, b, Alternative::TwoSided, MwuMethod::Auto, true).ok());
        }),
        ("psi_deciles", |a, b| {
            black_box(distance::psi_deciles(a, b).ok());
        }),
        ("wasserstein", |a, b| {
            black_box(distance::wasserstein(a, b).ok());
        }),
        ("js_evidently_bins", |a, b| {
            black_box(
                distance::evidently_bins(a, b)
                    .ok()
                    .map(|x| distance::evidently_jensen_shannon(&x)),
            );
        }),
        ("psi_evidently_bins", |a, b| {
            black_box(
                distance::evidently_bins(a, b)
                    .ok()
                    .map(|x| distance::evidently_psi(&x)),
            );
        }),
    ];
    for (name, kernel) in kernels {
        let mut g = c.benchmark_group(name);
        g.sample_size(10).warm_up_time(Duration::from_millis(500));
        for (a, b) in &data {
            g.throughput(Throughput::Elements(2 * a.len() as u64));
            g.bench_with_input(
                BenchmarkId::from_parameter(a.len()),
                &(a, b),
                |bch, (a, b)| bch.iter(|| kernel(a, b)),
            );
        }
        g.finish();
    }
}

fn categorical(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(8);
    let mut g = c.benchmark_group("chi2_contingency_2x20");
    for n in SIZES {
        let mut counts = vec![vec![0.0; 20]; 2];
        for row in counts.iter_mut() {
            for _ in 0..n {
                row[rng.random_range(0..20)] += 1.0;
            }
        }
        g.bench_with_input(BenchmarkId::from_parameter(n), &counts, |bch, counts| {
            bch.iter(|| black_box(chi2_contingency(counts, true, Divergence::Pearson).ok()))
        });
    }
    g.finish();
}

fn summaries(c: &mut Criterion) {
    let data = samples();
    let mut g = c.benchmark_group("summary_update");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    for (a, _) in &data {
        let n = a.len();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("moments", n), a, |bch, a| {
            bch.iter(|| {
                let mut m = Moments::default();
                a.iter().for_each(|x| m.push(*x));
                black_box(m)
            })
        });
        g.bench_with_input(BenchmarkId::new("histogram_10_edges", n), a, |bch, a| {
            bch.iter(|| {
                let mut h = Histogram::new((-5..5).map(f64::from).collect());
                a.iter().for_each(|x| h.push(*x));
                black_box(h)
            })
        });
        g.bench_with_input(BenchmarkId::new("bottom_k_5000", n), a, |bch, a| {
            bch.iter(|| black_box(bottom_k(a, 0)))
        });
        g.bench_with_input(BenchmarkId::new("kll_sketch", n), a, |bch, a| {
            bch.iter(|| {
                let mut s = QuantileSketch::default();
                s.extend(a);
                black_box(s)
            })
        });
        g.bench_with_input(BenchmarkId::new("adwin", n), a, |bch, a| {
            bch.iter(|| {
                let mut d = Adwin::default();
                a.iter().for_each(|x| {
                    d.update(f64::from(*x > 1.0));
                });
                black_box(d)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("summary_merge");
    for (a, b) in &data {
        let n = a.len();
        let (x, y) = (bottom_k(a, 0), bottom_k(b, a.len()));
        g.bench_with_input(
            BenchmarkId::new("bottom_k_5000", n),
            &(x, y),
            |bch, (x, y)| {
                bch.iter_batched(
                    || x.clone(),
                    |mut m| {
                        m.merge(y);
                        m
                    },
                    BatchSize::SmallInput,
                )
            },
        );
        let (x, y) = (sketch(a), sketch(b));
        g.bench_with_input(BenchmarkId::new("kll_sketch", n), &(x, y), |bch, (x, y)| {
            bch.iter_batched(
                || x.clone(),
                |mut m| {
                    m.merge(y);
                    m
                },
                BatchSize::SmallInput,
            )
        });
        let mut m = [Moments::default(), Moments::default()];
        a.iter().for_each(|v| m[0].push(*v));
        b.iter().for_each(|v| m[1].push(*v));
        g.bench_with_input(BenchmarkId::new("moments", n), &m, |bch, m| {
            bch.iter(|| {
                let mut x = m[0];
                x.merge(&m[1]);
                black_box(x)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("sketch_tests");
    for (a, b) in &data {
        let (x, y) = (sketch(a), sketch(b));
        g.bench_with_input(BenchmarkId::new("ks", a.len()), &(&x, &y), |bch, (x, y)| {
            bch.iter(|| black_box(ks_sketch(x, y).ok()))
        });
        g.bench_with_input(
            BenchmarkId::new("psi", a.len()),
            &(&x, &y),
            |bch, (x, y)| bch.iter(|| black_box(psi_sketch(x, y).ok())),
        );
    }
    g.finish();
}

/// A window's per-event updates: `ValueSample::offer` (buffer, cut by
/// selection) and `Kmv::insert` (buffer, sort and dedup), each beside the
/// structure it replaced (a binary heap of the `k` smallest; a B-tree set of
/// the `k` smallest distinct), fed the same keys in the same run.
fn sample_offers(c: &mut Criterion) {
    let mut g = c.benchmark_group("sample_offers");
    g.measurement_time(Duration::from_secs(3));
    for n in [10_000usize, 100_000] {
        g.throughput(Throughput::Elements(n as u64));
        let items: Vec<(u64, f64)> = (0..n)
            .map(|i| (xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()), i as f64))
            .collect();
        g.bench_with_input(
            BenchmarkId::new("value_sample_5000", n),
            &items,
            |bch, it| {
                bch.iter(|| {
                    let mut s = ValueSample::new(5000);
                    it.iter().for_each(|(p, x)| s.offer(*p, *x));
                    black_box(s.len())
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("binary_heap_5000", n),
            &items,
            |bch, it| {
                bch.iter(|| {
                    let mut h = std::collections::BinaryHeap::new();
                    for (p, x) in it {
                        let item = (*p, x.to_bits());
                        if h.len() < 5000 {
                            h.push(item);
                        } else if let Some(mut top) = h.peek_mut()
                            && item < *top
                        {
                            *top = item;
                        }
                    }
                    black_box(h.len())
                })
            },
        );
        // Units: each seen about 4 times.
        let units: Vec<u64> = (0..n)
            .map(|i| xxhash_rust::xxh3::xxh3_64(&(i / 4).to_le_bytes()))
            .collect();
        g.bench_with_input(BenchmarkId::new("kmv_10000", n), &units, |bch, u| {
            bch.iter(|| {
                let mut s = Kmv::new(10_000);
                u.iter().for_each(|h| s.insert(*h));
                black_box(s.estimate())
            })
        });
        g.bench_with_input(BenchmarkId::new("btreeset_10000", n), &units, |bch, u| {
            bch.iter(|| {
                let mut s = std::collections::BTreeSet::new();
                for h in u {
                    if s.len() >= 10_000 {
                        let max = s.last().copied().unwrap_or(u64::MAX);
                        if *h < max && s.insert(*h) {
                            s.pop_last();
                        }
                    } else {
                        s.insert(*h);
                    }
                }
                black_box(s.len())
            })
        });
    }
    g.finish();
}

fn bottom_k(values: &[f64], offset: usize) -> BottomK {
    let mut s = BottomK::new(5000, 1);
    for (i, x) in values.iter().enumerate() {
        let p = xxhash_rust::xxh3::xxh3_64(&(i + offset).to_le_bytes());
        if s.would_keep(p) {
            s.offer(p, vec![*x])
        } else {
            s.count_skipped()
        }
    }
    s
}

fn sketch(values: &[f64]) -> QuantileSketch {
    let mut s = QuantileSketch::default();
    s.extend(values);
    s
}

criterion_group!(
    benches,
    two_sample_tests,
    categorical,
    summaries,
    sample_offers
);
criterion_main!(benches);
