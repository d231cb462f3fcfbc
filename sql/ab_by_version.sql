-- Each experiment's cumulative result on its primary metric, window by
-- window, beside what the registry says about the variant's model version
-- (stage, model type, the accuracy logged at registration) and how many of
-- that version's columns drifted in the same window. A challenger that wins
-- while its inputs drift is winning on traffic it was not trained for.
WITH drift AS (
  SELECT model, version, window_start,
         count(*) FILTER (WHERE drifted) AS drifted_columns,
         count(*) AS columns_tested
  FROM drift_results
  GROUP BY model, version, window_start
),
primary_metric AS (
  SELECT model, experiment, window_start, metric
  FROM ab_decisions
)
SELECT r.experiment, r.window_end, r.variant, r.version, v.stage, v.model_type,
       r.metric, round(r.estimate, 4) AS estimate,
       round(v.metrics['accuracy'], 4) AS registry_accuracy,
       round(r.effect, 4) AS effect, round(r.cs_low, 4) AS cs_low,
       round(r.cs_high, 4) AS cs_high, d.drifted_columns, d.columns_tested
FROM ab_results r
JOIN primary_metric p
  ON p.model = r.model AND p.experiment = r.experiment
 AND p.window_start = r.window_start AND p.metric = r.metric
JOIN model_versions v
  ON v.name = r.model AND CAST(v.version AS VARCHAR) = r.version
LEFT JOIN drift d
  ON d.model = r.model AND d.version = r.version AND d.window_start = r.window_start
WHERE r.scope = 'cumulative'
ORDER BY r.experiment, r.window_end, r.is_control DESC, r.variant
