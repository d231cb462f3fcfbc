-- Drift of each model version window by window, beside the registry's
-- record of the version (stage, model type) and the training run that
-- produced it (its name, status and final validation metrics): which
-- training produced the model whose inputs now drift.
WITH run_metrics AS (
  SELECT run_id,
         max(value) FILTER (WHERE key = 'val_accuracy') AS val_accuracy,
         max(value) FILTER (WHERE key = 'val_loss') AS val_loss
  FROM latest_metrics
  GROUP BY run_id
)
SELECT s.window_start, s.model, s.version, s.columns_drifted, s.columns_tested,
       round(s.share, 3) AS drift_share, v.stage, v.model_type,
       r.run_name, r.status AS run_status, round(m.val_accuracy, 4) AS run_val_accuracy,
       round(m.val_loss, 4) AS run_val_loss, v.run_id
FROM drift_summary s
JOIN model_versions v
  ON v.name = s.model AND CAST(v.version AS VARCHAR) = s.version
LEFT JOIN runs r ON r.run_id = v.run_id
LEFT JOIN run_metrics m ON m.run_id = v.run_id
ORDER BY s.window_start, s.model, s.version
