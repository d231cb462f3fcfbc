"""Oracle vectors for the drift methods of src/stats/drift.rs: the k-sample
Anderson-Darling test, the two-sample Cramér-von Mises test, chi-square and
G goodness of fit on count vectors, and Evidently's Hellinger, PSI,
Jensen-Shannon, Anderson-Darling, Cramér-von Mises, chi-square, G and z
drift tests.

Writes tests/data/drift_methods_oracle.json: {"cases": [...]}, each case in
the schema of ../shared/oracle (README there), so tests/it/oracle.rs checks
it with the same code and tolerances. The JSON is checked in; `cargo test`
needs no Python. Regenerate with:

    python3 -m venv /tmp/oracle-venv
    /tmp/oracle-venv/bin/pip install scipy==1.17.1 numpy==2.4.6 pandas==2.3.3 evidently==0.7.23
    PYTHONHASHSEED=0 /tmp/oracle-venv/bin/python tests/data/make_drift_vectors.py

Every expected value comes from a library call on the stored inputs:

* `scipy.stats.anderson_ksamp(samples, midrank=...)` (statistic, the seven
  critical values, and the p-value that scipy interpolates and caps at 0.25
  or floors at 0.001; the warnings scipy gives there are recorded), with
  several sizes, ties, two and three samples, and p at both bounds;
* `scipy.stats.cramervonmises_2samp(x, y, method=...)` with `auto` on both
  sides of its switch (exact when both samples have at most 20 values),
  `exact` and `asymptotic` explicitly, and ties;
* `scipy.stats.power_divergence(current_counts, f_exp, lambda_=...)` with
  `f_exp = reference_counts / sum(reference_counts) * sum(current_counts)`,
  Pearson and log-likelihood (the G-test), including a category absent from
  the reference (infinite statistic, p = 0) and p below 1e-300;
* the drift tests of Evidently 0.7.23 called as
  `evidently.legacy.calculations.stattests.<test>(reference, current,
  feature_type, threshold=None)`, which returns the drift score, the
  threshold and the verdict. Evidently bins data itself; the script also
  recomputes its Hellinger, PSI and Jensen-Shannon with numpy (the rules
  in the docstrings of `evidently_*` below) and asserts the two agree, so
  the rules are written down here.

Two Evidently facts the port follows (see src/stats/drift.rs):
* its numeric Hellinger does not use the PSI/JS bins: Sturges edges over the
  *distinct* values of both samples, density histograms, and
  `sqrt(1 - sum(sqrt(h1 h2)) * mean_width)`;
* its `g_test` passes the raw reference counts as `f_exp`, which scipy 1.17
  rejects unless both samples have the same size. The Evidently `g_test`
  entries here therefore use samples of equal size; the port's G-test is
  the `power_divergence` entries' (reference proportions scaled to the
  current total), which equals Evidently's whenever Evidently's runs.

Set `PYTHONHASHSEED=0`: Evidently sums categorical terms in Python set
order, so the last bits of categorical values depend on string hashing.
"""

import json
import math
import sys
import warnings
from pathlib import Path

import evidently
import numpy as np
import pandas as pd
import scipy
import scipy.stats as st
from evidently.legacy.calculations import stattests as ev
from evidently.legacy.core import ColumnType
from scipy.spatial import distance as ssd

VERSIONS = {
    "python": ".".join(map(str, sys.version_info[:3])),
    "numpy": np.__version__,
    "scipy": scipy.__version__,
    "pandas": pd.__version__,
    "evidently": evidently.__version__,
}
RNG_NOTE = (
    "numpy.random.default_rng(seed) (PCG64); inputs rounded as stored here, "
    "outputs computed from the stored values"
)
STAT_TOL = {"rel": 1e-9, "abs": 1e-12}
P_TOL = {"rel": 1e-6, "abs": 0.0, "floor": 1e-300}
EXACT = {"rel": 0.0, "abs": 0.0}


def jnum(v):
    """A float for JSON: non-finite values as strings, as the shared oracle."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def call(fn, *args, **kwargs):
    """(result, warnings as 'Category: message')."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = fn(*args, **kwargs)
    return r, sorted({f"{w.category.__name__}: {w.message}" for w in caught})


def entry(id_, library, function, args, kwargs, outputs, warns, tolerance, note=None, debug=None):
    e = {
        "id": id_,
        "library": library,
        "version": VERSIONS[library],
        "function": function,
        "args": args,
        "kwargs": kwargs,
        "outputs": {k: jnum(v) if not isinstance(v, list) else [jnum(x) for x in v] for k, v in outputs.items()},
        "error": None,
        "warnings": warns,
        "tolerance": {k: tolerance[k] for k in outputs},
    }
    if note:
        e["note"] = note
    if debug:
        e["debug"] = debug
    return e


def case(id_, description, seed, inputs, expected):
    category = id_.split("/")[0]
    return {
        "schema_version": 1,
        "id": id_,
        "set": "mlwatch-drift-methods",
        "category": category,
        "description": description,
        "seed": seed,
        "rng": RNG_NOTE if seed is not None else "hand-picked inputs",
        "versions": VERSIONS,
        "inputs": inputs,
        "expected": expected,
    }


# --- Anderson-Darling ------------------------------------------------------

AD_TOL = {"statistic": STAT_TOL, "critical_values": STAT_TOL, "pvalue": P_TOL}


def anderson_entries(samples):
    out = []
    for midrank in (True, False):
        r, w = call(st.anderson_ksamp, samples, midrank=midrank)
        bound = "capped at 0.25" if r.pvalue == 0.25 else "floored at 0.001" if r.pvalue == 0.001 else None
        out.append(
            entry(
                "anderson_ksamp_" + ("midrank" if midrank else "right"),
                "scipy",
                "scipy.stats.anderson_ksamp",
                ["$samples"],
                {"midrank": midrank},
                {
                    "statistic": r.statistic,
                    "critical_values": [float(c) for c in r.critical_values],
                    "pvalue": r.pvalue,
                },
                w,
                AD_TOL,
                note=f"p {bound}" if bound else None,
            )
        )
    return out


def anderson_cases():
    cases = []
    specs = [
        ("anderson_ksamp/small_shift", 3001, "25 vs 30 normal values, the second shifted by 0.6",
         lambda g: [g.normal(0, 1, 25), g.normal(0.6, 1, 30)], 4),
        ("anderson_ksamp/tiny", 3002, "3 vs 4 values (N = 7, the variance's smallest sizes)",
         lambda g: [g.normal(0, 1, 3), g.normal(0.5, 1, 4)], 4),
        ("anderson_ksamp/ties_poisson", 3003, "80 vs 60 Poisson(3) / Poisson(3.6) counts: many ties",
         lambda g: [g.poisson(3.0, 80).astype(float), g.poisson(3.6, 60).astype(float)], None),
        ("anderson_ksamp/few_values", 3004, "40 vs 45 values from {0, 1, 2}",
         lambda g: [g.integers(0, 3, 40).astype(float), g.choice([0.0, 1.0, 2.0], 45, p=[0.2, 0.3, 0.5])], None),
        ("anderson_ksamp/floored", 3005, "100 vs 120 normal values 2 sd apart: p floored at 0.001",
         lambda g: [g.normal(0, 1, 100), g.normal(2, 1, 120)], 4),
        ("anderson_ksamp/three_samples", 3006, "three samples (30, 40, 25), the third shifted by 0.5",
         lambda g: [g.normal(0, 1, 30), g.normal(0, 1, 40), g.normal(0.5, 1, 25)], 4),
        ("anderson_ksamp/large", 3007, "2000 vs 1500 lognormal values, the second scaled by 1.05",
         lambda g: [g.lognormal(0, 0.5, 2000), 1.05 * g.lognormal(0, 0.5, 1500)], 4),
    ]
    for id_, seed, desc, make, decimals in specs:
        g = np.random.default_rng(seed)
        samples = [np.round(s, decimals) if decimals is not None else s for s in make(g)]
        inputs = {"samples": [s.tolist() for s in samples]}
        cases.append(case(id_, desc, seed, inputs, anderson_entries(samples)))
    # The same values in both samples: the statistic is below every critical
    # value and p is capped at 0.25.
    x = [0.5, 1.25, 2.0, 3.5, 4.0, 5.75, 6.5, 8.0]
    y = [5.75, 0.5, 8.0, 2.0, 6.5, 1.25, 4.0, 3.5]
    cases.append(
        case("anderson_ksamp/capped", "the same 8 values in both samples (p capped at 0.25)", None,
             {"samples": [x, y]}, anderson_entries([np.array(x), np.array(y)]))
    )
    return cases


# --- Cramér-von Mises ------------------------------------------------------

CVM_TOL = {"statistic": STAT_TOL, "pvalue": P_TOL}


def cvm_entries(x, y, methods):
    out = []
    for method in methods:
        r, w = call(st.cramervonmises_2samp, x, y, method=method)
        chosen = "exact" if max(len(x), len(y)) <= 20 else "asymptotic"
        out.append(
            entry(
                f"cramervonmises_2samp_{method}",
                "scipy",
                "scipy.stats.cramervonmises_2samp",
                ["$x", "$y"],
                {"method": method},
                {"statistic": r.statistic, "pvalue": r.pvalue},
                w,
                CVM_TOL,
                note=f"auto is {chosen} here (max(n, m) = {max(len(x), len(y))})" if method == "auto" else None,
            )
        )
    return out


def cvm_cases():
    cases = []
    specs = [
        ("cramervonmises_2samp/exact_10_12", 3101, "10 vs 12 normal values, the second shifted by 0.8",
         lambda g: (g.normal(0, 1, 10), g.normal(0.8, 1, 12)), 4, ["auto", "asymptotic"]),
        ("cramervonmises_2samp/exact_19_20", 3102, "19 vs 20 values (coprime sizes, the largest auto-exact pair)",
         lambda g: (g.normal(0, 1, 19), g.normal(0.4, 1.3, 20)), 4, ["auto", "asymptotic"]),
        ("cramervonmises_2samp/auto_asymptotic_21_20", 3103, "21 vs 20 values: auto switches to the asymptotic p",
         lambda g: (g.normal(0, 1, 21), g.normal(0.5, 1, 20)), 4, ["auto", "exact"]),
        ("cramervonmises_2samp/exact_ties", 3104, "15 vs 18 values from 0..4 (ties; exact and asymptotic)",
         lambda g: (g.integers(0, 5, 15).astype(float), g.integers(1, 5, 18).astype(float)), None, ["auto", "asymptotic"]),
        ("cramervonmises_2samp/tiny", 3105, "2 vs 3 values, the smallest sizes scipy accepts",
         lambda g: (np.array([0.25, 1.5]), np.array([0.75, 2.0, 3.25])), None, ["auto", "asymptotic"]),
        ("cramervonmises_2samp/asymptotic_500_400", 3106, "500 vs 400 normal values, the second shifted by 0.15",
         lambda g: (g.normal(0, 1, 500), g.normal(0.15, 1, 400)), 4, ["auto"]),
        ("cramervonmises_2samp/asymptotic_ties", 3107, "300 vs 250 Poisson(4) / Poisson(4.4) counts",
         lambda g: (g.poisson(4.0, 300).astype(float), g.poisson(4.4, 250).astype(float)), None, ["auto"]),
        ("cramervonmises_2samp/asymptotic_small_p", 3108, "400 vs 300 normal values 0.45 sd apart (p near 1e-6)",
         lambda g: (g.normal(0, 1, 400), g.normal(0.45, 1, 300)), 4, ["auto"]),
        ("cramervonmises_2samp/asymptotic_no_shift", 3109, "800 vs 700 uniform values from one distribution",
         lambda g: (g.uniform(0, 1, 800), g.uniform(0, 1, 700)), 4, ["auto"]),
    ]
    for id_, seed, desc, make, decimals, methods in specs:
        g = np.random.default_rng(seed)
        x, y = make(g)
        if decimals is not None:
            x, y = np.round(x, decimals), np.round(y, decimals)
        cases.append(case(id_, desc, seed, {"x": x.tolist(), "y": y.tolist()}, cvm_entries(x, y, methods)))
    return cases


# --- Goodness of fit on counts ---------------------------------------------

GOF_TOL = {"statistic": STAT_TOL, "pvalue": P_TOL}


def gof_cases():
    cases = []
    specs = [
        ("goodness_of_fit/drift_6", "six categories, the current shares shifted",
         ["a", "b", "c", "d", "e", "f"], [120, 80, 60, 40, 30, 20], [70, 75, 66, 40, 45, 30]),
        ("goodness_of_fit/no_drift_4", "four categories in the same proportions, up to noise",
         ["north", "south", "east", "west"], [250, 250, 300, 200], [124, 131, 149, 96]),
        ("goodness_of_fit/two_categories", "two categories (one degree of freedom)",
         ["no", "yes"], [900, 100], [430, 70]),
        ("goodness_of_fit/new_in_current", "a category absent from the reference: f_exp = 0",
         ["a", "b", "c", "z"], [50, 30, 20, 0], [40, 30, 20, 10]),
        ("goodness_of_fit/missing_in_current", "a reference category absent from current: f_obs = 0",
         ["a", "b", "c"], [50, 30, 20], [60, 40, 0]),
        ("goodness_of_fit/underflow", "large counts far apart: p below 1e-300",
         ["a", "b", "c"], [100000, 100000, 100000], [150000, 100000, 50000]),
    ]
    for id_, desc, cats, rc, cc in specs:
        rc_a, cc_a = np.array(rc, dtype=float), np.array(cc, dtype=float)
        f_exp = rc_a / rc_a.sum() * cc_a.sum()
        expected = []
        for lam, name in [("pearson", "chisquare_gof_vs_reference_props"), ("log-likelihood", "g_test_gof_vs_reference_props")]:
            r, w = call(st.power_divergence, cc_a, f_exp, lambda_=lam)
            expected.append(
                entry(
                    name,
                    "scipy",
                    "scipy.stats.power_divergence",
                    ["$current_counts", "f_exp = reference_counts / sum(reference_counts) * sum(current_counts)"],
                    {"lambda_": lam},
                    {"statistic": r.statistic, "pvalue": r.pvalue},
                    w,
                    GOF_TOL,
                )
            )
        inputs = {"categories": cats, "reference_counts": rc, "current_counts": cc}
        cases.append(case(id_, desc, None, inputs, expected))
    return cases


# --- Evidently drift tests -------------------------------------------------

def sturges_edges(values):
    """numpy.histogram_bin_edges(values, bins="sturges"), spelled out."""
    values = np.asarray(values, dtype=float)
    lo, hi = values.min(), values.max()
    width = (hi - lo) / (np.log2(values.size) + 1.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    n = int(np.ceil((hi - lo) / width)) if width else 1
    edges = np.linspace(lo, hi, n + 1)
    assert np.array_equal(edges, np.histogram_bin_edges(values, bins="sturges"))
    return edges


def evidently_hellinger_numeric(ref, cur):
    """Evidently's numeric Hellinger: Sturges edges over the distinct values
    of both samples, density histograms, sqrt(1 - clip(sum sqrt(h1 h2) w))."""
    keys = np.unique(np.concatenate([ref, cur]))
    edges = sturges_edges(keys)
    h1 = np.histogram(ref, bins=edges, density=True)[0]
    h2 = np.histogram(cur, bins=edges, density=True)[0]
    width = (edges.max() - edges.min()) / (len(edges) - 1)
    s = 0.0
    for p, q in zip(h1, h2):
        s += math.sqrt(float(p) * float(q)) * width
    return math.sqrt(1 - float(np.clip(s, 0, 1))), edges


def evidently_bins(ref, cur, numeric):
    """Evidently's get_binned_data: Sturges bins over both samples together
    when a numeric reference has more than 20 distinct values, else the
    share of each distinct value (sorted here; Evidently uses set order)."""
    if numeric and len(np.unique(ref)) > 20:
        edges = sturges_edges(np.concatenate([ref, cur]))
        return np.histogram(ref, edges)[0] / len(ref), np.histogram(cur, edges)[0] / len(cur), edges
    keys = sorted(set(ref) | set(cur))
    r = np.array([np.sum(ref == k) for k in keys]) / len(ref)
    c = np.array([np.sum(cur == k) for k in keys]) / len(cur)
    return r, c, None


def feel_zeroes(p):
    m = p[p > 0].min()
    return np.where(p == 0, m / 1e6 if m <= 1e-4 else 1e-4, p)


def evidently_psi(r, c):
    r, c = feel_zeroes(r), feel_zeroes(c)
    return float(np.sum((r - c) * np.log(r / c)))


def evidently_js(r, c):
    return float(ssd.jensenshannon(r, c))


def evidently_hellinger_categorical(r, c):
    return math.sqrt(1 - float(np.clip(np.sum(np.sqrt(r * c)), 0, 1)))


EV_TESTS = {
    "hellinger": ev.hellinger_stat_test,
    "psi": ev.psi_stat_test,
    "jensenshannon": ev.jensenshannon_stat_test,
    "anderson": ev.anderson_darling_test,
    "cramer_von_mises": ev.cramer_von_mises,
    "chisquare": ev.chi_stat_test,
    "g_test": ev.g_test,
    "z": ev.z_stat_test,
}
P_VALUE_TESTS = {"anderson", "cramer_von_mises", "chisquare", "g_test", "z"}


def evidently_entries(ref, cur, numeric, tests):
    out = []
    ftype = ColumnType.Numerical if numeric else ColumnType.Categorical
    rs, cs = pd.Series(ref), pd.Series(cur)
    for name in tests:
        r, w = call(EV_TESTS[name], rs.copy(), cs.copy(), ftype, None)
        value = float(r.drift_score)
        debug = None
        if name in ("hellinger", "psi", "jensenshannon"):
            if name == "hellinger" and numeric:
                mine, edges = evidently_hellinger_numeric(np.asarray(ref), np.asarray(cur))
            else:
                rp, cp, edges = evidently_bins(np.asarray(ref), np.asarray(cur), numeric)
                mine = {"hellinger": evidently_hellinger_categorical, "psi": evidently_psi, "jensenshannon": evidently_js}[name](rp, cp)
            assert math.isclose(mine, value, rel_tol=1e-9, abs_tol=1e-12), (name, mine, value)
            if edges is not None:
                debug = {"bin_edges": [float(e) for e in edges]}
        tol = P_TOL if name in P_VALUE_TESTS else STAT_TOL
        out.append(
            entry(
                f"evidently_{name}",
                "evidently",
                f"evidently.legacy.calculations.stattests.{EV_TESTS[name].name}",
                ["$reference", "$current", f"feature_type={'num' if numeric else 'cat'}", "threshold=None"],
                {"stattest": name, "feature_type": "num" if numeric else "cat"},
                {"value": value, "threshold": float(r.actual_threshold), "drifted": bool(r.drifted)},
                w,
                {"value": tol, "threshold": STAT_TOL, "drifted": EXACT},
                debug=debug,
            )
        )
    return out


def evidently_cases():
    cases = []
    num_tests = ["hellinger", "psi", "jensenshannon", "anderson", "cramer_von_mises"]
    specs = [
        ("evidently_stattest/num_shift", 3201, "600 vs 400 normal values, the second shifted by 0.3 (Sturges bins)",
         lambda g: (g.normal(0, 1, 600), g.normal(0.3, 1, 400)), 3, num_tests),
        ("evidently_stattest/num_same", 3202, "500 vs 300 gamma values from one distribution",
         lambda g: (g.gamma(2.0, 1.0, 500), g.gamma(2.0, 1.0, 300)), 3, num_tests),
        ("evidently_stattest/num_small", 3203, "15 vs 12 values (Cramér-von Mises exact)",
         lambda g: (g.normal(0, 1, 15), g.normal(0.9, 1, 12)), 3, num_tests),
        ("evidently_stattest/num_few_values", 3204, "200 vs 150 integers 0..6 (per-value PSI/JS bins)",
         lambda g: (g.integers(0, 7, 200).astype(float), g.binomial(6, 0.55, 150).astype(float)), None, num_tests),
        ("evidently_stattest/num_constant", None, "one value in both samples (one Hellinger bin)",
         lambda g: (np.full(20, 1.5), np.full(10, 1.5)), None, ["hellinger", "psi", "jensenshannon"]),
    ]
    for id_, seed, desc, make, decimals, tests in specs:
        g = np.random.default_rng(seed)
        ref, cur = make(g)
        if decimals is not None:
            ref, cur = np.round(ref, decimals), np.round(cur, decimals)
        inputs = {"reference": ref.tolist(), "current": cur.tolist()}
        cases.append(case(id_, desc, seed, inputs, evidently_entries(ref, cur, True, tests)))

    cat_specs = [
        ("evidently_stattest/cat_drift", 3301, "categorical, 5 categories with shifted shares; equal sizes (300 each)",
         ["red", "green", "blue", "black", "white"], [0.3, 0.25, 0.2, 0.15, 0.1], [0.2, 0.2, 0.25, 0.15, 0.2], 300, 300,
         ["hellinger", "psi", "jensenshannon", "chisquare", "g_test"]),
        ("evidently_stattest/cat_unequal_sizes", 3302, "categorical, 4 categories, 500 vs 200 values, a new category in current",
         ["a", "b", "c", "d"], [0.4, 0.3, 0.3, 0.0], [0.35, 0.3, 0.25, 0.1], 500, 200,
         ["hellinger", "psi", "jensenshannon", "chisquare"]),
        ("evidently_stattest/cat_binary", 3303, "binary categorical (z-test), equal sizes",
         ["no", "yes"], [0.7, 0.3], [0.6, 0.4], 250, 250,
         ["hellinger", "psi", "jensenshannon", "chisquare", "g_test", "z"]),
    ]
    for id_, seed, desc, cats, p_ref, p_cur, n_ref, n_cur, tests in cat_specs:
        g = np.random.default_rng(seed)
        ref = g.choice(cats, n_ref, p=p_ref)
        cur = g.choice(cats, n_cur, p=p_cur)
        inputs = {"reference": ref.tolist(), "current": cur.tolist()}
        cases.append(case(id_, desc, seed, inputs, evidently_entries(ref, cur, False, tests)))
    return cases


def main():
    cases = anderson_cases() + cvm_cases() + gof_cases() + evidently_cases()
    doc = {
        "schema_version": 1,
        "description": (
            "Drift methods: k-sample Anderson-Darling, two-sample Cramér-von Mises, chi-square and G "
            "goodness of fit on counts, and Evidently's Hellinger, PSI, Jensen-Shannon, Anderson-Darling, "
            "Cramér-von Mises, chi-square, G and z drift tests. Each case follows the shared oracle's case "
            "schema. Generated by tests/data/make_drift_vectors.py; see its docstring."
        ),
        "versions": VERSIONS,
        "cases": cases,
    }
    out = Path(__file__).with_name("drift_methods_oracle.json")
    out.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    n = sum(len(c["expected"]) for c in cases)
    print(f"wrote {out}: {len(cases)} cases, {n} expected entries")


if __name__ == "__main__":
    main()
