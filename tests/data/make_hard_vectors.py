"""Oracle vectors for hard inputs: values sharing a large offset, and
degenerate samples (constant, a single value, a single category, 0/0
proportions).

Writes tests/data/hard_inputs_oracle.json: {"cases": [...]}, each case in the
schema of ../shared/oracle (README there), so tests/it/oracle.rs checks it
with the same code and tolerances. The JSON is checked in; `cargo test` needs
no Python. Regenerate with:

    python3 -m venv /tmp/oracle-venv
    /tmp/oracle-venv/bin/pip install scipy==1.17.1 numpy==2.4.6 statsmodels==0.15.0
    /tmp/oracle-venv/bin/python tests/data/make_hard_vectors.py

**Large offsets.** scipy computes `mean(a) - mean(b)` from two means each
rounded at the data's magnitude (1 ulp of 1e9 is 1.2e-7) after a summation
that is itself inexact there, so on values around 1e9 with noise of about 1
scipy's own t statistic is off by about 1e-7..1e-6 (relative), more than the
oracle tolerance (1e-9). The t-test is translation invariant, so the expected
values are scipy's on `x - shift`, where the shift (the offset) is subtracted
exactly in float64 (Sterbenz: every value is within a factor two of it; the
script asserts `(x - shift) + shift == x`). scipy's result on the raw values
is kept in `debug.scipy_on_raw_values` with its relative error, to show the
loss. Mann-Whitney (rank based) is computed on the raw values.

**Degenerate inputs** are passed to the libraries as they are; NaN and
infinite outputs are written as strings ("NaN", "Infinity", "-Infinity") as
in the shared oracle. A constant sample whose mean does not divide evenly
(e.g. [0.1] * 3) is deliberately absent: scipy's `sum / n` mean is then not
the constant, and it reports a finite statistic from rounding noise
(t = 2.45 for [0.1] * 3 vs [0.1] * 7), where the port's shifted moments give
exactly zero variance.
"""

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy
import scipy.stats as st
import statsmodels
from statsmodels.stats import proportion as smp

VERSIONS = {
    "python": ".".join(map(str, sys.version_info[:3])),
    "numpy": np.__version__,
    "scipy": scipy.__version__,
    "statsmodels": statsmodels.__version__,
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


T_TOL = {"statistic": STAT_TOL, "pvalue": P_TOL, "df": STAT_TOL, "ci95_low": STAT_TOL, "ci95_high": STAT_TOL}


def ttest_outputs(a, b, equal_var, alternative):
    r, w = call(st.ttest_ind, a, b, equal_var=equal_var, alternative=alternative)
    ci, w2 = call(r.confidence_interval, 0.95)
    out = {
        "statistic": r.statistic,
        "pvalue": r.pvalue,
        "df": r.df,
        "ci95_low": ci.low,
        "ci95_high": ci.high,
    }
    return out, sorted(set(w) | set(w2))


def ttest_entries(a, b, shift=None):
    """Welch and Student, two-sided and one-sided; on `x - shift` when given."""
    out = []
    for equal_var, alternative in [(False, "two-sided"), (True, "two-sided"), (False, "less"), (False, "greater")]:
        name = ("welch" if not equal_var else "student") + "_ttest" + ("" if alternative == "two-sided" else "_" + alternative)
        kwargs = {"equal_var": equal_var, "alternative": alternative}
        if shift is None:
            outputs, warns = ttest_outputs(a, b, equal_var, alternative)
            out.append(entry(name, "scipy", "scipy.stats.ttest_ind", ["$a", "$b"], kwargs, outputs, warns, T_TOL))
            continue
        sa, sb = a - shift, b - shift
        assert np.array_equal(sa + shift, a) and np.array_equal(sb + shift, b), "shift not exact"
        outputs, warns = ttest_outputs(sa, sb, equal_var, alternative)
        raw, _ = ttest_outputs(a, b, equal_var, alternative)
        rel = {
            k: jnum(abs(raw[k] - outputs[k]) / abs(outputs[k]))
            for k in ("statistic", "ci95_low", "ci95_high")
            if math.isfinite(outputs[k]) and outputs[k] != 0
        }
        out.append(
            entry(
                name,
                "scipy",
                "scipy.stats.ttest_ind",
                [f"$a - {shift!r}", f"$b - {shift!r}"],
                kwargs,
                outputs,
                warns,
                T_TOL,
                note=(
                    f"computed on the values minus the shift {shift!r} (exact in float64; the test is "
                    "translation invariant), because scipy on the raw values loses digits itself; "
                    "a port given the raw $a, $b must match these"
                ),
                debug={"scipy_on_raw_values": {k: jnum(v) for k, v in raw.items()}, "raw_relative_error": rel},
            )
        )
    return out


def mwu_entries(a, b):
    out = []
    for method, cc in [("auto", True), ("asymptotic", True), ("asymptotic", False)]:
        kwargs = {"alternative": "two-sided", "method": method}
        if method != "auto":
            kwargs["use_continuity"] = cc
        r, w = call(st.mannwhitneyu, a, b, **kwargs)
        name = "mannwhitneyu_" + method + ("" if method == "auto" else ("_cc" if cc else "_nocc"))
        out.append(
            entry(
                name,
                "scipy",
                "scipy.stats.mannwhitneyu",
                ["$a", "$b"],
                kwargs,
                {"statistic": r.statistic, "pvalue": r.pvalue},
                w,
                {"statistic": STAT_TOL, "pvalue": P_TOL},
                note="statistic is U1 (for the first sample a)",
            )
        )
    return out


def case(id_, description, seed, inputs, expected):
    category = id_.split("/")[0]
    return {
        "schema_version": 1,
        "id": id_,
        "set": "mlwatch-hard-inputs",
        "category": category,
        "description": description,
        "seed": seed,
        "rng": RNG_NOTE if seed is not None else "hand-picked inputs",
        "versions": VERSIONS,
        "inputs": inputs,
        "expected": expected,
    }


def ab_means_cases():
    cases = []
    # Values around 1e9 with noise of about 1 (6 decimals, as the shared
    # oracle rounds), and epoch seconds with milliseconds around 1.7e9.
    for id_, seed, offset, decimals, (n1, n2), (mu_b, sd_b) in [
        ("ab_means/large_offset_1e9", 2101, 1e9, 6, (1500, 1200), (0.05, 1.2)),
        ("ab_means/epoch_seconds_1_7e9", 2102, 1.7e9, 3, (400, 350), (-0.2, 0.8)),
    ]:
        rng = np.random.default_rng(seed)
        a = np.round(offset + rng.normal(0.0, 1.0, n1), decimals)
        b = np.round(offset + rng.normal(mu_b, sd_b, n2), decimals)
        expected = ttest_entries(a, b, shift=np.float64(offset)) + mwu_entries(a, b)
        desc = (
            f"{n1} vs {n2} values around {offset:g} with noise of about 1 "
            f"(b: mean +{mu_b}, sd {sd_b}), rounded to {decimals} decimals"
        )
        cases.append(case(id_, desc, seed, {"a": a.tolist(), "b": b.tolist()}, expected))

    # Degenerate samples, as they are.
    for id_, desc, a, b in [
        ("ab_means/constant_equal", "both samples constant, same value", [5.0] * 8, [5.0] * 6),
        ("ab_means/constant_different", "both samples constant, different values", [5.0] * 8, [7.25] * 6),
        ("ab_means/single_value", "one value against four", [5.0], [5.0, 6.0, 7.5, 6.25]),
        ("ab_means/single_value_each", "one value in each sample", [3.0], [4.0]),
    ]:
        a, b = np.array(a), np.array(b)
        expected = ttest_entries(a, b)
        if len(a) > 1 and len(b) > 1:
            expected += mwu_entries(a, b)
        cases.append(case(id_, desc, None, {"a": a.tolist(), "b": b.tolist()}, expected))
    return cases


def categorical_cases():
    cases = []
    # A single category in both samples.
    rc, cc = [5], [7]
    table = [rc, cc]
    expected = []
    r, w = call(st.chi2_contingency, table)
    expected.append(
        entry(
            "chi2_contingency",
            "scipy",
            "scipy.stats.chi2_contingency",
            ["$counts_table"],
            {},
            {"statistic": r.statistic, "pvalue": r.pvalue, "dof": r.dof, "expected_freq": np.ravel(r.expected_freq).tolist()},
            w,
            {"statistic": STAT_TOL, "pvalue": P_TOL, "dof": EXACT, "expected_freq": STAT_TOL},
            note="one category: dof 0, statistic 0 and p = 1 by scipy's convention",
        )
    )
    f_exp = np.array(rc) / sum(rc) * sum(cc)
    r, w = call(st.chisquare, cc, f_exp=f_exp)
    expected.append(
        entry(
            "chisquare_gof_vs_reference_props",
            "scipy",
            "scipy.stats.chisquare",
            ["$current_counts", "f_exp = reference_counts / sum(reference_counts) * sum(current_counts)"],
            {},
            {"statistic": r.statistic, "pvalue": r.pvalue},
            w,
            {"statistic": STAT_TOL, "pvalue": P_TOL},
            note="one category: no degrees of freedom, chi2.sf(x, 0) is NaN",
        )
    )
    inputs = {
        "reference": ["a"] * rc[0],
        "current": ["a"] * cc[0],
        "categories": ["a"],
        "reference_counts": rc,
        "current_counts": cc,
        "counts_table": table,
    }
    cases.append(case("categorical_drift/single_category", "one category in both samples", None, inputs, expected))

    # Sample-ratio mismatch with a single arm.
    observed, ratios = [1000], [1.0]
    r, w = call(st.chisquare, observed, f_exp=np.sum(observed) * np.array(ratios))
    srm = entry(
        "srm_chisquare",
        "scipy",
        "scipy.stats.chisquare",
        ["$observed", "f_exp = sum(observed) * expected_ratios"],
        {},
        {"statistic": r.statistic, "pvalue": r.pvalue},
        w,
        {"statistic": STAT_TOL, "pvalue": P_TOL},
    )
    cases.append(case("srm/single_arm", "one arm", None, {"observed": observed, "expected_ratios": ratios}, [srm]))
    return cases


def proportion_cases():
    cases = []
    ci_tol = {"ci95_low": STAT_TOL, "ci95_high": STAT_TOL}
    for id_, desc, (c1, n1, c2, n2) in [
        ("ab_proportions/no_successes", "no successes in either arm (0/0 pooled variance)", (0, 50, 0, 80)),
        ("ab_proportions/all_successes", "every unit a success in both arms", (50, 50, 80, 80)),
    ]:
        expected = []
        (z, p), w = call(smp.proportions_ztest, [c1, c2], [n1, n2])
        expected.append(
            entry(
                "proportions_ztest_pooled",
                "statsmodels",
                "statsmodels.stats.proportion.proportions_ztest",
                ["[$count1, $count2]", "[$nobs1, $nobs2]"],
                {"alternative": "two-sided", "prop_var": False},
                {"statistic": z, "pvalue": p},
                w,
                {"statistic": STAT_TOL, "pvalue": P_TOL},
            )
        )
        r, w = call(smp.test_proportions_2indep, c1, n1, c2, n2, method="wald", compare="diff", alternative="two-sided")
        expected.append(
            entry(
                "test_proportions_2indep_wald",
                "statsmodels",
                "statsmodels.stats.proportion.test_proportions_2indep",
                ["$count1", "$nobs1", "$count2", "$nobs2"],
                {"method": "wald", "compare": "diff", "alternative": "two-sided"},
                {"statistic": r.statistic, "pvalue": r.pvalue},
                w,
                {"statistic": STAT_TOL, "pvalue": P_TOL},
            )
        )
        for method in ["wald", "agresti-caffo", "newcomb"]:
            (lo, hi), w = call(smp.confint_proportions_2indep, c1, n1, c2, n2, method=method, compare="diff", alpha=0.05)
            expected.append(
                entry(
                    f"confint_diff_{method}",
                    "statsmodels",
                    "statsmodels.stats.proportion.confint_proportions_2indep",
                    ["$count1", "$nobs1", "$count2", "$nobs2"],
                    {"method": method, "compare": "diff", "alpha": 0.05},
                    {"ci95_low": lo, "ci95_high": hi},
                    w,
                    ci_tol,
                )
            )
        for i, (c, n) in enumerate([(c1, n1), (c2, n2)], start=1):
            for method in ["normal", "wilson"]:
                (lo, hi), w = call(smp.proportion_confint, c, n, alpha=0.05, method=method)
                expected.append(
                    entry(
                        f"proportion_confint_{method}_{i}",
                        "statsmodels",
                        "statsmodels.stats.proportion.proportion_confint",
                        [f"$count{i}", f"$nobs{i}"],
                        {"alpha": 0.05, "method": method},
                        {"ci95_low": lo, "ci95_high": hi},
                        w,
                        ci_tol,
                    )
                )
        inputs = {"count1": c1, "nobs1": n1, "count2": c2, "nobs2": n2}
        cases.append(case(id_, desc, None, inputs, expected))
    return cases


def main():
    cases = ab_means_cases() + categorical_cases() + proportion_cases()
    doc = {
        "schema_version": 1,
        "description": (
            "Hard inputs for the statistical kernels: large offsets and degenerate samples. "
            "Each case follows the shared oracle's case schema. Generated by "
            "tests/data/make_hard_vectors.py; see its docstring."
        ),
        "versions": VERSIONS,
        "cases": cases,
    }
    out = Path(__file__).with_name("hard_inputs_oracle.json")
    out.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    n = sum(len(c["expected"]) for c in cases)
    print(f"wrote {out}: {len(cases)} cases, {n} expected entries")


if __name__ == "__main__":
    main()
