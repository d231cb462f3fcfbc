//! Verdicts on degenerate input, as a user sees them from the binary: a test
//! that is undefined on the data (NaN p-value, no degrees of freedom) is
//! reported `not_testable`, never "no drift".

use crate::{TestResult, run_mlwatch};

/// `stats drift` with a column holding one category on both sides, next to
/// a column that does drift: the first is not testable (for the default
/// z-test and a forced goodness of fit alike), the second drifts, and the
/// dataset row counts the not-testable column.
#[test]
fn drift_on_a_single_category_is_not_testable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (reference, current) = (dir.path().join("ref.csv"), dir.path().join("cur.csv"));
    let table = |shifted: bool| {
        let mut text = String::from("flag,x\n");
        for i in 0..60 {
            let x = if shifted { 100 + i } else { i };
            text += &format!("on,{x}\n");
        }
        text
    };
    std::fs::write(&reference, table(false))?;
    std::fs::write(&current, table(true))?;
    for method in [None, Some("chi_square")] {
        let mut args = vec!["stats".to_string(), "drift".into()];
        args.push(reference.display().to_string());
        args.push(current.display().to_string());
        if let Some(m) = method {
            args.push("--categorical-method".into());
            args.push(m.into());
        }
        let out: serde_json::Value = serde_json::from_str(&run_mlwatch(&args)?)?;
        let rows = out.as_array().ok_or("not an array")?;
        let flag = rows
            .iter()
            .find(|r| r["column"] == "flag")
            .ok_or("no flag row")?;
        assert_eq!(flag["verdict"], "not_testable", "{method:?}: {flag}");
        assert_eq!(flag["drifted"], false, "{flag}");
        if method.is_some() {
            // scipy's chisquare over one category: p = NaN, printed as null.
            assert!(flag["p_value"].is_null(), "{flag}");
        }
        let x = rows.iter().find(|r| r["column"] == "x").ok_or("no x row")?;
        assert_eq!(x["verdict"], "drift", "{x}");
        let dataset = rows.last().ok_or("no rows")?;
        assert_eq!(dataset["not_testable_count"], 1, "{dataset}");
        assert_eq!(dataset["drifted_count"], 1, "{dataset}");
        assert_eq!(dataset["verdict"], "drift", "{dataset}");
    }
    Ok(())
}

/// `stats srm` with a single arm has no degrees of freedom: not testable.
#[test]
fn srm_with_one_arm_is_not_testable() -> TestResult {
    let out: serde_json::Value = serde_json::from_str(&run_mlwatch([
        "stats",
        "srm",
        "--observed",
        "1000",
        "--weights",
        "1",
    ])?)?;
    assert_eq!(out["verdict"], "not_testable", "{out}");
    assert_eq!(out["drifted"], false, "{out}");
    assert!(out["p_value"].is_null(), "{out}");
    let two: serde_json::Value = serde_json::from_str(&run_mlwatch([
        "stats",
        "srm",
        "--observed",
        "1000,1200",
        "--weights",
        "1,1",
    ])?)?;
    assert_eq!(two["verdict"], "drift", "{two}");
    Ok(())
}
