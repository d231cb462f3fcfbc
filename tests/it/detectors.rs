//! ADWIN against river's implementation on fixed streams
//! (tests/data/adwin_river.json, written by tests/data/make_adwin_vectors.py).

use mlwatch::stats::detectors::{Adwin, DetectorState};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    values: Vec<f64>,
    detections: Vec<Detection>,
    final_width: u64,
    final_variance: f64,
    final_estimation: f64,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Detection {
    index: usize,
    width: u64,
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn adwin_detects_where_river_does() {
    let path = crate::manifest_dir().join("tests/data/adwin_river.json");
    let v: Vectors = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(v.cases.len(), 4);
    for case in v.cases {
        let mut a = Adwin::default();
        let mut found = Vec::new();
        let mut max_buckets = 0;
        for (index, x) in case.values.iter().enumerate() {
            if a.update(*x) == DetectorState::Drift {
                found.push(Detection {
                    index,
                    width: a.width(),
                });
            }
            max_buckets = max_buckets.max(a.buckets());
        }
        assert_eq!(found, case.detections, "{}", case.name);
        assert_eq!(a.width(), case.final_width, "{}", case.name);
        assert!(
            close(a.mean(), case.final_estimation),
            "{}: mean {} vs {}",
            case.name,
            a.mean(),
            case.final_estimation
        );
        // river's `variance` property is the window's sum of squared
        // deviations (not divided by the width, despite its docstring).
        let ssd = a.variance() * a.width() as f64;
        assert!(
            close(ssd, case.final_variance),
            "{}: sum of squared deviations {ssd} vs {}",
            case.name,
            case.final_variance
        );
        // Exponential histogram: at most 6 buckets per level over log2(n) levels.
        let levels = (case.values.len() as f64).log2().ceil() as usize + 1;
        assert!(
            max_buckets <= 6 * levels,
            "{}: {max_buckets} buckets",
            case.name
        );
    }
}
