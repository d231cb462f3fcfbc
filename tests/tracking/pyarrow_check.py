"""Tracking files read back with pyarrow (run by .ci/run after cargo test).

Logs two runs with the mlwatch CLI, as a training script would, then reads
every tracking table with pyarrow only and fetches the artifact from the
content-addressed store, checking it byte for byte against its sha256.
Usage: MLWATCH=target/debug/mlwatch python tests/tracking/pyarrow_check.py
"""
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

MLWATCH = os.environ.get("MLWATCH", "target/debug/mlwatch")


def runs(data, *args):
    out = subprocess.run([MLWATCH, "runs", "--data", str(data), *args],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "store"
        weights = tmp / "weights.bin"
        weights.write_bytes(os.urandom(100_000))
        ids = []
        for name, depth in (("a", 4), ("b", 6)):
            run = runs(data, "start", "--experiment", "pyarrow", "--name", name, "--tag", "ci=yes")
            runs(data, "log-param", run, f"max_depth={depth}", "model=xgb")
            for step in range(5):
                runs(data, "log-metric", run, f"loss={1 / (step + 1)}", "--step", str(step))
            sha = runs(data, "log-artifact", run, str(weights), "--path", "model/weights.bin")
            runs(data, "end", run)
            ids.append((run, sha))

        t = data / "tracking"
        run_log = pq.read_table(t / "run_log").to_pylist()
        ended = sorted((r["run_name"], r["status"]) for r in run_log if r["end_time"] is not None)
        assert ended == [("a", "FINISHED"), ("b", "FINISHED")], ended
        params = sorted((r["key"], r["value"]) for r in pq.read_table(t / "params").to_pylist())
        assert params == [("max_depth", "4"), ("max_depth", "6"), ("model", "xgb"), ("model", "xgb")], params
        metrics = pq.read_table(t / "metrics").to_pylist()
        assert len(metrics) == 10 and {m["step"] for m in metrics} == set(range(5)), metrics
        tags = pq.read_table(t / "tag_log").to_pylist()
        assert {(r["key"], r["value"]) for r in tags} == {("ci", "yes")}, tags

        artifacts = pq.read_table(t / "artifacts").to_pylist()
        assert len(artifacts) == 2, artifacts
        expected = hashlib.sha256(weights.read_bytes()).hexdigest()
        for a, (run, sha) in zip(sorted(artifacts, key=lambda a: [i for i, _ in ids].index(a["run_id"])), ids):
            assert a["run_id"] == run and a["path"] == "model/weights.bin", a
            assert a["sha256"] == sha == expected and a["size"] == 100_000, a
            blob = (data / "artifacts" / "sha256" / a["sha256"]).read_bytes()
            assert blob == weights.read_bytes()
            assert hashlib.sha256(blob).hexdigest() == a["sha256"]
        print(f"tracking pyarrow check: ok ({len(run_log)} run_log rows, {len(metrics)} metric points, "
              f"artifact {expected[:12]}… byte for byte)")


if __name__ == "__main__":
    main()
