"""Registry files read back with pyarrow (run by .ci/run after cargo test).

Drives a short registry session with the mlwatch binary, then reads the
event log and the snapshot with pyarrow only, and checks what it finds.
Usage: MLWATCH=target/debug/mlwatch python tests/registry/pyarrow_check.py
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

MLWATCH = os.environ.get("MLWATCH", "target/debug/mlwatch")


def mlwatch(data, *args):
    # A snapshot every 3 commits, so that one is written and checked too.
    env = dict(os.environ, MLWATCH__REGISTRY__SNAPSHOT_EVERY="3")
    out = subprocess.run(
        [MLWATCH, "registry", "--data", str(data), "--format", "json", "--actor", "ci", *args],
        check=True, capture_output=True, text=True, env=env,
    )
    return json.loads(out.stdout)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "store"
        model = tmp / "model.bin"
        model.write_bytes(os.urandom(50_000))
        for auc in ("0.80", "0.90"):
            mlwatch(data, "register", "churn", "--artifact", str(model), "--metric", f"auc={auc}")
        mlwatch(data, "promote", "churn", "1", "staging")
        mlwatch(data, "promote", "churn", "1", "production")
        mlwatch(data, "promote", "churn", "2", "production", "--allow-skip")
        mlwatch(data, "alias", "churn", "champion", "2")

        log = pq.read_table(data / "registry" / "log")
        rows = log.sort_by([("seq", "ascending"), ("idx", "ascending")]).to_pylist()
        kinds = [(r["kind"], r["version"]) for r in rows]
        assert kinds == [
            ("register", 1), ("register", 2), ("promote", 1), ("promote", 1),
            ("promote", 2), ("archive", 1), ("set_alias", 2),
        ], kinds
        assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 5, 6]
        assert all(r["actor"] == "ci" for r in rows)
        assert str(log.schema.field("time").type) == "timestamp[us, tz=UTC]"
        reg = json.loads(rows[0]["metadata"])
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        assert reg["artifact"]["sha256"] == digest, reg
        blob = data / "artifacts" / "sha256" / digest
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest
        snaps = sorted((data / "registry" / "snapshots").iterdir())
        assert [p.name for p in snaps] == [f"{3:020}.parquet", f"{6:020}.parquet"], snaps
        snap = pq.read_table(snaps[-1]).sort_by([("seq", "ascending"), ("idx", "ascending")])
        assert snap.to_pylist() == rows, "the last snapshot holds the whole log"
        print(f"registry log read by pyarrow: {log.num_rows} events, schema {log.schema.names}")


if __name__ == "__main__":
    sys.exit(main())
