-- Which features drifted in which windows, newest first.
SELECT window_start, model, version, feature, statistic, p_value, drifted
FROM drift_results
ORDER BY window_start DESC, model, feature
