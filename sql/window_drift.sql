-- Drift tests for one closed window (run by mlwatch for every window).
-- Table window_current(model, version, feature, value): the window's sample.
-- ks_reference(value, name) tests a group's values against the training
-- sample named `<model>/<feature>`, which the function keeps sorted.
-- $1: p-value threshold, $2: fewest current values for a test.
WITH tests AS (
    SELECT model, version, feature, ks_reference(value, model || '/' || feature) AS ks
    FROM window_current
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
