"""The scipy side of the Welch + Mann-Whitney comparison (issue 3).

    python scipy_means.py DIR/reference.parquet DIR/current.parquet
    mlwatch stats means DIR/reference.parquet DIR/current.parquet --column num_01

Data from ../shared/bench/make_drift_data.py; compare whole-process time and
peak memory (/usr/bin/time -v or hyperfine).
"""
import json, sys
import pyarrow.parquet as pq
from scipy import stats
a = pq.read_table(sys.argv[1], columns=["num_01"]).column(0).to_numpy()
b = pq.read_table(sys.argv[2], columns=["num_01"]).column(0).to_numpy()
t = stats.ttest_ind(a, b, equal_var=False)
u = stats.mannwhitneyu(a, b)
print(json.dumps({"welch_p": float(t.pvalue), "welch_t": float(t.statistic), "u": float(u.statistic), "mwu_p": float(u.pvalue)}))
