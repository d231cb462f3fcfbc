-- The dataset verdict of one closed window per model and version (run by
-- mlwatch after window_drift.sql, whose rows are the table window_drift).
-- As Evidently's DatasetDriftMetric: the share of drifted columns (features
-- and the prediction) among the columns tested; the dataset drifted when
-- the share reaches $1 (drift.dataset_share).
SELECT model,
       version,
       count(*) AS columns_tested,
       count(*) FILTER (WHERE drifted) AS columns_drifted,
       CAST(count(*) FILTER (WHERE drifted) AS DOUBLE) / count(*) AS share,
       CAST(count(*) FILTER (WHERE drifted) AS DOUBLE) / count(*) >= CAST($1 AS DOUBLE)
           AS dataset_drifted
FROM window_drift
GROUP BY model, version
ORDER BY model, version
