"""Oracle vectors for model performance per monitoring window: the
(prediction, label) pairs of one window as a streaming service sees them,
and the metrics scikit-learn and numpy compute on them. They check the
kernels of src/stats/metrics.rs and the windowed performance evaluator that
joins predictions to labels.

Writes tests/data/performance_oracle.json:

    {"generator": "tests/data/make_performance_vectors.py",
     "description": ..., "versions": {...}, "rng": ..., "tolerance": {...},
     "cases": [{"name", "description", "seed", "task", "positive_label",
                "decision_threshold", "pairs": {"prediction": [...],
                "label": [...]}, "expected": {...}, "warnings": [...]}]}

Predictions are floats for score cases (`P(label == positive_label)`) and
regression, strings for class cases; labels are always strings, as they
arrive on the wire ("1"/"0", "yes"/"no", "cat", "3.25"). `task` is
"binary", "multiclass" or "regression"; `positive_label` and
`decision_threshold` are null where they do not apply. A score case
predicts the positive class iff `score >= decision_threshold`.

The JSON is checked in; `cargo test` needs no Python. Regenerate with:

    python3 -m venv /tmp/oracle-venv
    /tmp/oracle-venv/bin/pip install scikit-learn==1.9.1 numpy==2.4.6 scipy==1.17.1
    /tmp/oracle-venv/bin/python tests/data/make_performance_vectors.py

Every expected value is a library call on the stored pairs (labels parsed as
a consumer would: `label == positive_label` for binary cases, `float(label)`
for regression):

* binary: `accuracy_score`, `precision_score` / `recall_score` / `f1_score`
  (`pos_label`, `zero_division=0`) on the thresholded predictions,
  `roc_auc_score` and `log_loss(labels=[0, 1])` and
  `brier_score_loss(pos_label=1)` on the scores, and `positive_rate`, the
  share of pairs predicted positive (numpy). Class cases have no scores,
  hence no AUC, log loss or Brier score.
* multiclass: `accuracy_score`, `f1_score(average="macro" | "weighted",
  zero_division=0)` over the sorted union of the classes in both vectors
  ("fish" occurs as a label but is never predicted: its F1 is 0 through
  `zero_division`, not NaN).
* regression: `mean_absolute_error`, `rmse = sqrt(mean_squared_error)`
  (asserted equal to `root_mean_squared_error`), `r2_score` (default
  `force_finite=True`) and `mean_error = numpy.mean(pred - label)` (bias,
  positive when over-predicting; scikit-learn has no such metric). The
  constant-label cases hit `force_finite`: R² is 0.0 when some residual is
  non-zero and 1.0 when every prediction is exact. Their constant, 3.0, is
  one whose numpy mean is exact (see r2_score in src/stats/metrics.rs for a
  constant like 0.1, where scikit-learn's R² is about -5e31).

Two scikit-learn 1.9 facts the script asserts, so they are written down:

* `log_loss` clips the two-column probabilities `[1 - p, p]` to
  `[eps, 1 - eps]` with `eps = numpy.finfo(float64).eps` (2.22e-16; the
  `eps` argument is gone since 1.5 and the dtype's epsilon is used). The
  score cases contain confident wrong scores (1.0 with label "0", 0.0 with
  label "1"), each costing `-log(eps) = 36.04`, so the clipping is visible
  in the expected value. In 1.9 the probability argument is `y_proba`
  (`y_pred` is deprecated).
* `brier_score_loss` on one column of scores computes half the squared
  error over the columns `[1 - p, p]`, the same as `mean((p - y)^2)` up to
  the last bits; the script asserts the two agree to 1e-12.
"""

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy
import sklearn
from sklearn import metrics as skm

VERSIONS = {
    "python": ".".join(map(str, sys.version_info[:3])),
    "numpy": np.__version__,
    "scipy": scipy.__version__,
    "scikit-learn": sklearn.__version__,
}
RNG_NOTE = (
    "numpy.random.default_rng(seed) (PCG64); values rounded as stored here, "
    "expected metrics computed from the stored values"
)
# Ratios of counts are exact up to one division; the rest differ from a
# naive-summation port only by summation order.
TOLERANCE = {"rel": 1e-9, "abs": 1e-12}
EPS64 = float(np.finfo(np.float64).eps)


def call(fn, *args, **kwargs):
    """(result as float, warnings as 'Category: message')."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = fn(*args, **kwargs)
    return float(r), sorted({f"{w.category.__name__}: {w.message}" for w in caught})


class Expected:
    """Collects metric values and the warnings of the calls behind them."""

    def __init__(self):
        self.values, self.warnings = {}, []

    def add(self, key, fn, *args, **kwargs):
        v, w = call(fn, *args, **kwargs)
        assert math.isfinite(v), (key, v)
        self.values[key] = v
        self.warnings += [f"{key}: {m}" for m in w]
        return v

    def put(self, key, v):
        v = float(v)
        assert math.isfinite(v), (key, v)
        self.values[key] = v
        return v


def case(name, description, seed, task, positive_label, threshold, prediction, label, exp):
    return {
        "name": name,
        "description": description,
        "seed": seed,
        "task": task,
        "positive_label": positive_label,
        "decision_threshold": threshold,
        "pairs": {"prediction": prediction, "label": label},
        "expected": exp.values,
        "warnings": exp.warnings,
    }


# --- binary ----------------------------------------------------------------


def class_metrics(exp, y_true, y_pred, pos_label):
    """accuracy, precision, recall, f1 and positive_rate of predicted classes."""
    exp.add("accuracy", skm.accuracy_score, y_true, y_pred)
    for key, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        exp.add(key, fn, y_true, y_pred, pos_label=pos_label, zero_division=0)
    exp.put("positive_rate", np.mean(np.asarray(y_pred) == pos_label))


def score_case(name, description, seed, n, threshold):
    g = np.random.default_rng(seed)
    y = (g.random(n) < 0.4).astype(int)
    # Overlapping beta scores, rounded to 3 decimals so many tie.
    score = np.where(y == 1, g.beta(3.0, 2.0, n), g.beta(2.0, 3.5, n))
    score = np.round(score, 3)
    # Pairs at the edges: scores exactly at the threshold (predicted
    # positive), certain and right, certain and wrong (log loss clipped).
    edges = [(threshold, 1), (threshold, 0), (1.0, 1), (0.0, 0), (1.0, 0), (0.0, 1)]
    at = g.choice(n, len(edges), replace=False)
    for i, (s, t) in zip(at, edges):
        score[i], y[i] = s, t
    labels = [str(int(t)) for t in y]

    # As a consumer parses the window.
    y_true = np.array([int(s == "1") for s in labels])
    assert np.array_equal(y_true, y)
    y_pred = (score >= threshold).astype(int)

    exp = Expected()
    class_metrics(exp, y_true, y_pred, 1)
    exp.add("roc_auc", skm.roc_auc_score, y_true, score)
    ll = exp.add("log_loss", skm.log_loss, y_true, score, labels=[0, 1])
    br = exp.add("brier", skm.brier_score_loss, y_true, score, pos_label=1)

    # The rules, spelled out.
    p = np.clip(np.stack([1 - score, score], axis=1), EPS64, 1 - EPS64)
    mine = -np.mean(np.log(p[np.arange(n), y_true]))
    assert math.isclose(ll, mine, rel_tol=1e-12), (ll, mine)
    wrong = int(np.sum((score == 1.0) & (y_true == 0)) + np.sum((score == 0.0) & (y_true == 1)))
    assert wrong >= 2
    with np.errstate(divide="ignore"):
        assert not np.isfinite(-np.mean(np.log(np.where(y_true == 1, score, 1 - score))))
    assert math.isclose(br, float(np.mean((score - y_true) ** 2)), rel_tol=1e-12), br

    return case(
        name,
        description,
        seed,
        "binary",
        "1",
        threshold,
        score.tolist(),
        labels,
        exp,
    )


def classes_case(seed=4003, n=200):
    g = np.random.default_rng(seed)
    truth = g.random(n) < 0.35
    # A classifier right 80% of the time, biased towards "no".
    flip = g.random(n) < np.where(truth, 0.3, 0.1)
    pred = truth ^ flip
    labels = ["yes" if t else "no" for t in truth]
    prediction = ["yes" if p else "no" for p in pred]
    exp = Expected()
    class_metrics(exp, labels, prediction, "yes")
    return case(
        "binary_classes",
        f"{n} pairs, predicted classes 'yes'/'no' (no scores), positive label 'yes'",
        seed,
        "binary",
        "yes",
        None,
        prediction,
        labels,
        exp,
    )


# --- multiclass ------------------------------------------------------------


def multiclass_case(seed=4004, n=300):
    g = np.random.default_rng(seed)
    classes = ["cat", "dog", "bird", "fish"]
    truth = g.choice(classes, n, p=[0.4, 0.3, 0.2, 0.1])
    # Right 70% of the time; otherwise one of cat/dog/bird at random, so
    # "fish" is never predicted.
    right = g.random(n) < 0.7
    guess = g.choice(classes[:3], n)
    pred = np.where(right & (truth != "fish"), truth, guess)
    labels, prediction = truth.tolist(), pred.tolist()
    assert "fish" in labels and "fish" not in prediction
    exp = Expected()
    exp.add("accuracy", skm.accuracy_score, labels, prediction)
    for avg in ("macro", "weighted"):
        exp.add(f"f1_{avg}", skm.f1_score, labels, prediction, average=avg, zero_division=0)
    return case(
        "multiclass",
        f"{n} pairs over cat/dog/bird/fish; 'fish' is a label but never predicted (zero_division = 0)",
        seed,
        "multiclass",
        None,
        None,
        prediction,
        labels,
        exp,
    )


# --- regression ------------------------------------------------------------


def regression_expected(label_values, pred):
    exp = Expected()
    exp.add("mae", skm.mean_absolute_error, label_values, pred)
    mse, w = call(skm.mean_squared_error, label_values, pred)
    assert not w, w
    rmse = exp.put("rmse", math.sqrt(mse))
    rmse_sk, _ = call(skm.root_mean_squared_error, label_values, pred)
    assert math.isclose(rmse, rmse_sk, rel_tol=1e-15), (rmse, rmse_sk)
    exp.add("r2", skm.r2_score, label_values, pred)
    exp.put("mean_error", np.mean(np.asarray(pred) - np.asarray(label_values)))
    return exp


def regression_case(name, description, seed, label_values, pred):
    labels = [repr(float(v)) for v in label_values]
    parsed = np.array([float(s) for s in labels])
    assert np.array_equal(parsed, label_values)
    exp = regression_expected(parsed, np.asarray(pred))
    return case(name, description, seed, "regression", None, None, [float(p) for p in pred], labels, exp)


def regression_cases():
    seed, n = 4005, 300
    g = np.random.default_rng(seed)
    truth = np.round(g.gamma(4.0, 1.5, n), 4)
    # Over-predicts by about 0.2 with noise growing with the value.
    pred = np.round(truth + 0.2 + g.normal(0, 0.3 + 0.1 * truth), 4)
    out = [
        regression_case(
            "regression",
            f"{n} pairs, gamma labels, predictions biased by +0.2 with heteroscedastic noise",
            seed,
            truth,
            pred,
        )
    ]

    seed, n = 4006, 20
    g = np.random.default_rng(seed)
    const = np.full(n, 3.0)
    assert np.mean(const) == 3.0
    pred = np.round(3.0 + g.normal(0, 0.5, n), 4)
    c = regression_case(
        "regression_constant_label",
        f"{n} pairs, every label 3.0: R^2 is 0.0 (force_finite, residuals non-zero)",
        seed,
        const,
        pred,
    )
    assert c["expected"]["r2"] == 0.0
    out.append(c)

    c = regression_case(
        "regression_constant_label_exact",
        "5 pairs, every label and prediction 3.0: R^2 is 1.0 (force_finite, no residual)",
        None,
        np.full(5, 3.0),
        np.full(5, 3.0),
    )
    assert c["expected"]["r2"] == 1.0
    out.append(c)
    return out


def main():
    cases = [
        score_case(
            "binary_scores",
            "300 pairs, scores rounded to 3 decimals (ties), labels '1'/'0', threshold 0.5; "
            "includes scores at the threshold and confident wrong scores 1.0 / 0.0",
            4001,
            300,
            0.5,
        ),
        score_case(
            "binary_scores_threshold_07",
            "300 pairs as binary_scores (another seed), threshold 0.7; includes scores of exactly 0.7",
            4002,
            300,
            0.7,
        ),
        classes_case(),
        multiclass_case(),
    ] + regression_cases()
    doc = {
        "generator": "tests/data/make_performance_vectors.py",
        "description": (
            "Model performance per monitoring window: (prediction, label) pairs as a streaming service "
            "sees them (labels as strings) and the metrics scikit-learn / numpy compute on them. "
            "See the generator's docstring."
        ),
        "versions": VERSIONS,
        "rng": RNG_NOTE,
        "tolerance": TOLERANCE,
        "cases": cases,
    }
    out = Path(__file__).with_name("performance_oracle.json")
    out.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    n = sum(len(c["expected"]) for c in cases)
    print(f"wrote {out}: {len(cases)} cases, {n} expected values, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
