//! Time per call of each statistical kernel at 1e3, 1e5 and 1e6 values per
//! sample, and of summary updates and merges. A plain bench binary (median
//! of several runs per size) so it needs no extra dependencies:
//!
//!     cargo bench --bench kernels
//!
//! Both samples are normal with a small shift (seeded); sizes are per sample.

use std::hint::black_box;
use std::time::{Duration, Instant};

use mlwatch::stats::chi_square::{Divergence, chi2_contingency};
use mlwatch::stats::ks::{KsMethod, ks_2samp};
use mlwatch::stats::mann_whitney::{MwuMethod, mannwhitneyu};
use mlwatch::stats::sample::BottomK;
use mlwatch::stats::summary::{Histogram, Moments};
use mlwatch::stats::{Alternative, distance, t_test};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

fn median_time(mut f: impl FnMut()) -> Duration {
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (times.len() < 15 && start.elapsed() < Duration::from_secs(2)) {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn main() {
    let mut rng = StdRng::seed_from_u64(7);
    let normal = Normal::new(0.0, 1.0).expect("normal");
    println!("| kernel | 1e3 | 1e5 | 1e6 |");
    println!("|---|---:|---:|---:|");
    let sizes = [1_000usize, 100_000, 1_000_000];
    let samples: Vec<(Vec<f64>, Vec<f64>)> = sizes
        .iter()
        .map(|&n| {
            let a: Vec<f64> = (0..n).map(|_| normal.sample(&mut rng)).collect();
            let b: Vec<f64> = (0..n).map(|_| normal.sample(&mut rng) + 0.05).collect();
            (a, b)
        })
        .collect();
    type Kernel = fn(&[f64], &[f64]);
    let kernels: Vec<(&str, Kernel)> = vec![
        ("ks_2samp (auto)", |a, b| {
            black_box(ks_2samp(a, b, Alternative::TwoSided, KsMethod::Auto).ok());
        }),
        ("welch t-test + CI", |a, b| {
            black_box(t_test::ttest_ind(a, b, false, Alternative::TwoSided, 0.95).ok());
        }),
        ("mann-whitney (auto)", |a, b| {
            black_box(mannwhitneyu(a, b, Alternative::TwoSided, MwuMethod::Auto, true).ok());
        }),
        ("psi (deciles)", |a, b| {
            black_box(distance::psi_deciles(a, b).ok());
        }),
        ("wasserstein", |a, b| {
            black_box(distance::wasserstein(a, b).ok());
        }),
        ("jensen-shannon (Evidently bins)", |a, b| {
            black_box(
                distance::evidently_bins(a, b)
                    .ok()
                    .map(|x| distance::evidently_jensen_shannon(&x)),
            );
        }),
    ];
    for (name, k) in kernels {
        let cells: Vec<String> = samples
            .iter()
            .map(|(a, b)| fmt(median_time(|| k(a, b))))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    // chi-square on a 2 x k table built from n categorical values per side.
    let cells: Vec<String> = sizes
        .iter()
        .map(|&n| {
            let mut counts = vec![vec![0.0; 20]; 2];
            for row in counts.iter_mut() {
                for _ in 0..n {
                    row[rng.random_range(0..20)] += 1.0;
                }
            }
            fmt(median_time(|| {
                black_box(chi2_contingency(&counts, true, Divergence::Pearson).ok());
            }))
        })
        .collect();
    println!(
        "| chi2_contingency (2 x 20, from counts) | {} |",
        cells.join(" | ")
    );

    // Summaries: update every value, then merge two halves.
    for (name, update) in [
        ("moments update (all values)", 0u8),
        ("histogram update (all values, 10 edges)", 1),
        ("bottom-k 5000 update (all values)", 2),
    ] {
        let cells: Vec<String> = samples
            .iter()
            .map(|(a, _)| {
                fmt(median_time(|| match update {
                    0 => {
                        let mut m = Moments::default();
                        a.iter().for_each(|x| m.push(*x));
                        black_box(m);
                    }
                    1 => {
                        let mut h = Histogram::new((-5..5).map(f64::from).collect());
                        a.iter().for_each(|x| h.push(*x));
                        black_box(h);
                    }
                    _ => {
                        let mut s = BottomK::new(5000, 1);
                        for (i, x) in a.iter().enumerate() {
                            let p = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
                            if s.would_keep(p) {
                                s.offer(p, vec![*x])
                            } else {
                                s.count_skipped()
                            }
                        }
                        black_box(s);
                    }
                }))
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let cells: Vec<String> = samples
        .iter()
        .map(|(a, b)| {
            let mut x = BottomK::new(5000, 1);
            let mut y = BottomK::new(5000, 1);
            for (i, v) in a.iter().enumerate() {
                x.offer(xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()), vec![*v]);
            }
            for (i, v) in b.iter().enumerate() {
                y.offer(
                    xxhash_rust::xxh3::xxh3_64(&(i + a.len()).to_le_bytes()),
                    vec![*v],
                );
            }
            fmt(median_time(|| {
                let mut m = x.clone();
                m.merge(&y);
                black_box(m);
            }))
        })
        .collect();
    println!(
        "| bottom-k 5000 merge (two full samples) | {} |",
        cells.join(" | ")
    );
}
