-- Per window and model version, side by side: the share of drifted columns
-- (drift_summary), the accuracy on the joined labels (variants weighted by
-- their labelled predictions), its delta against the registry version's
-- accuracy, and the concept-drift detections in the window. Feature drift
-- without an accuracy drop is a shift the model absorbs; an accuracy drop
-- without feature drift is concept drift.
WITH acc AS (
  SELECT window_start, model, version,
         sum(value * n_labeled) FILTER (WHERE value IS NOT NULL)
           / sum(n_labeled) FILTER (WHERE value IS NOT NULL) AS accuracy,
         sum(delta * n_labeled) FILTER (WHERE delta IS NOT NULL)
           / sum(n_labeled) FILTER (WHERE delta IS NOT NULL) AS accuracy_delta,
         any_value(baseline_value) AS registry_accuracy,
         bool_or(degraded) AS degraded,
         sum(n_labeled) AS n_labeled,
         sum(n_predictions) AS n_predictions
  FROM performance
  WHERE metric = 'accuracy'
  GROUP BY window_start, model, version
),
det AS (
  SELECT window_start, model, version, count(*) AS detections,
         string_agg(DISTINCT detector, ',') AS detectors
  FROM concept_drift
  GROUP BY window_start, model, version
)
SELECT a.window_start, a.model, a.version,
       s.share AS drift_share, s.dataset_drifted,
       a.accuracy, a.registry_accuracy, a.accuracy_delta, a.degraded,
       a.n_labeled, a.n_predictions,
       coalesce(d.detections, 0) AS detections, d.detectors
FROM acc a
LEFT JOIN drift_summary s
  ON a.window_start = s.window_start AND a.model = s.model AND a.version = s.version
LEFT JOIN det d
  ON a.window_start = d.window_start AND a.model = d.model AND a.version = d.version
ORDER BY a.window_start, a.model, a.version
