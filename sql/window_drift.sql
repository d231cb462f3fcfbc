-- Drift tests for one closed window (run by mlwatch for every window).
-- Tables: the window's summaries, the variants of each version merged:
--   window_numeric(model, version, kind, feature, baseline, reference, method, threshold, value)
--     one row per numeric column, `value` its bottom-k sample as a list
--     (drift_reference also aggregates one value per row);
--   window_categorical(model, version, kind, feature, baseline, reference, method, threshold, category, n)
--     one row per category of a categorical column (NULL category: "other").
-- `reference` names the training profile held by the functions, `method` is
-- the column's configured method or 'auto' (Evidently's choice), `threshold`
-- the column's configured threshold or NULL.
-- drifted: p-value methods below the threshold (KS and Cramer-von Mises at
-- or below, as Evidently), distances at or above it; never when the test is
-- undefined on the data (testable false: such p-values are not corrected).
-- $1: fewest current values for a test; $2: threshold of p-value methods
-- without a column threshold; $3: correction of the p-values of one window,
-- model and version: 'none', 'holm' or 'bh' (Benjamini-Hochberg).
WITH tests AS (
    SELECT model, version, kind, feature, baseline, threshold AS column_threshold,
           drift_reference(value, reference, method, threshold) AS d
    FROM window_numeric
    GROUP BY model, version, kind, feature, baseline, reference, method, threshold
    UNION ALL
    SELECT model, version, kind, feature, baseline, threshold AS column_threshold,
           drift_reference_counts(category, n, reference, method, threshold) AS d
    FROM window_categorical
    GROUP BY model, version, kind, feature, baseline, reference, method, threshold
),
flat AS (
    SELECT model, version, kind, feature, baseline,
           d['method'] AS method,
           d['statistic'] AS statistic,
           d['p_value'] AS p_value,
           d['distance'] AS distance,
           CASE WHEN column_threshold IS NULL AND d['p_value_method']
                THEN CAST($2 AS DOUBLE) ELSE d['threshold'] END AS threshold,
           d['testable'] AS testable,
           -- Only testable p-values enter the correction.
           CASE WHEN d['testable'] THEN d['p_value'] END AS p_test,
           d['capped'] AS capped,
           d['n_reference'] AS n_reference,
           d['n_current'] AS n_current
    FROM tests
    WHERE d['n_current'] >= CAST($1 AS BIGINT) AND d['n_reference'] > 0
),
ranked AS (
    SELECT *,
           count(p_test) OVER (PARTITION BY model, version) AS m,
           row_number() OVER (PARTITION BY model, version
                              ORDER BY p_test ASC NULLS LAST, kind, feature) AS rnk
    FROM flat
),
adjusted AS (
    SELECT *,
           CASE WHEN p_test IS NULL THEN NULL
                WHEN CAST($3 AS VARCHAR) = 'none' THEN p_test
                WHEN CAST($3 AS VARCHAR) = 'holm' THEN least(1.0,
                    max(p_test * (m - rnk + 1)) OVER (PARTITION BY model, version ORDER BY rnk
                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
                ELSE least(1.0,
                    min(p_test * m / rnk) OVER (PARTITION BY model, version ORDER BY rnk DESC
                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
           END AS p_value_adjusted
    FROM ranked
)
SELECT model,
       version,
       kind,
       feature,
       method,
       statistic,
       p_value,
       p_value_adjusted,
       distance,
       threshold,
       coalesce(testable AND CASE
           WHEN p_value_adjusted IS NOT NULL
               THEN p_value_adjusted < threshold
                    OR (method IN ('ks', 'cramer_von_mises') AND p_value_adjusted = threshold)
           ELSE distance >= threshold END, false) AS drifted,
       n_reference,
       n_current,
       baseline,
       capped
FROM adjusted
ORDER BY model, version, kind, feature
