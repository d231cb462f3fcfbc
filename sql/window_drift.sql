-- Drift tests for one closed window (run by mlwatch for every window).
-- Tables: window_current(model, version, feature, value): the window's sample;
--         reference(model, feature, value): each model's training sample.
-- $1: p-value threshold, $2: fewest current values for a test.
WITH keys AS (
    SELECT DISTINCT model, version, feature FROM window_current
),
samples AS (
    SELECT model, version, feature, value, true AS is_current FROM window_current
    UNION ALL
    SELECT k.model, k.version, k.feature, r.value, false AS is_current
    FROM reference r JOIN keys k ON r.model = k.model AND r.feature = k.feature
),
tests AS (
    SELECT model, version, feature, ks_2samp(value, is_current) AS ks
    FROM samples
    GROUP BY model, version, feature
)
SELECT model,
       version,
       feature,
       'ks' AS method,
       ks['statistic'] AS statistic,
       ks['p_value'] AS p_value,
       CAST($1 AS DOUBLE) AS threshold,
       coalesce(ks['p_value'] < CAST($1 AS DOUBLE), false) AS drifted,
       ks['n_reference'] AS n_reference,
       ks['n_current'] AS n_current
FROM tests
WHERE ks['n_current'] >= CAST($2 AS BIGINT) AND ks['n_reference'] > 0
ORDER BY model, version, feature
