-- Which columns drifted in which windows, newest first, with the dataset verdict.
SELECT r.window_start, r.model, r.version, r.kind, r.feature, r.method,
       r.p_value_adjusted, r.distance, r.drifted, s.share, s.dataset_drifted
FROM drift_results r
JOIN drift_summary s
  ON r.window_start = s.window_start AND r.model = s.model AND r.version = s.version
ORDER BY r.window_start DESC, r.model, r.version, r.kind, r.feature
