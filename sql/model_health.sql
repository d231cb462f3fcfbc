-- One model's health window by window: the share of drifted columns and the
-- dataset verdict per version, the accuracy on the joined labels against the
-- registry version's, and the alerts raised, newest window first.
-- Parameters: $model (the model's name).
WITH acc AS (
  SELECT window_start, version,
         sum(value * n_labeled) FILTER (WHERE value IS NOT NULL)
           / sum(n_labeled) FILTER (WHERE value IS NOT NULL) AS accuracy,
         any_value(baseline_value) AS registry_accuracy
  FROM performance
  WHERE model = $model AND metric = 'accuracy'
  GROUP BY window_start, version
),
al AS (
  SELECT window_start, version, count(*) AS alerts,
         string_agg(DISTINCT kind, ',') AS alert_kinds
  FROM alerts
  WHERE model = $model
  GROUP BY window_start, version
)
SELECT s.window_start, s.version, s.columns_drifted, s.columns_tested,
       round(s.share, 3) AS drift_share, s.dataset_drifted,
       round(a.accuracy, 4) AS accuracy, round(a.registry_accuracy, 4) AS registry_accuracy,
       coalesce(al.alerts, 0) AS alerts, al.alert_kinds
FROM drift_summary s
LEFT JOIN acc a ON a.window_start = s.window_start AND a.version = s.version
LEFT JOIN al ON al.window_start = s.window_start AND al.version = s.version
WHERE s.model = $model
ORDER BY s.window_start DESC, s.version
