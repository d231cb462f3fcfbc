"""Integration test against a real Kafka-compatible broker (tansu).

Starts tansu on 127.0.0.1, produces events with the confluent-kafka Python
client (an outside producer), runs `mlwatch run --until-idle`, and checks the
Parquet outputs with pyarrow: the documented schema, the drifted feature, the
dead letters, and a training run logged through the `mlwatch.tracking` topic. Run by .ci/run; needs TANSU (path of the tansu binary) and
MLWATCH (path of the mlwatch binary) in the environment.
"""

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

START_MS = 1_767_225_600_000
WINDOWS = 4
PER_WINDOW = 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"tansu did not listen on {port}")


def main():
    tansu, mlwatch = os.environ["TANSU"], os.environ["MLWATCH"]
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen(
        [tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        run_test(f"127.0.0.1:{port}", mlwatch)
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def run_test(bootstrap, mlwatch):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = ["mlwatch.predictions", "mlwatch.features", "mlwatch.outcomes", "mlwatch.tracking",
              "mlwatch.alerts"]
    for f in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in topics]).values():
        f.result(timeout=30)

    rng = random.Random(5)
    tmp = tempfile.mkdtemp(prefix="mlwatch-e2e-")
    ref = os.path.join(tmp, "reference.parquet")
    pq.write_table(pa.table({
        "x": [rng.gauss(0, 1) for _ in range(3000)],
        "y": [rng.gauss(5, 2) for _ in range(3000)],
    }), ref)

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    n = WINDOWS * PER_WINDOW
    bad = 0
    labels = []
    for i in range(n):
        ts = START_MS + i * (WINDOWS * 60_000) // n
        shift = 3.0 if i >= (WINDOWS - 1) * PER_WINDOW else 0.0
        ev = {"event_id": f"e{i}", "ts": ts, "model": "m", "version": 2,
              "features": {"x": round(rng.gauss(shift, 1), 6), "y": round(rng.gauss(5, 2), 6), "extra": 1},
              "prediction": rng.random()}
        producer.produce("mlwatch.predictions", json.dumps(ev).encode())
        if i % 100 == 7:
            producer.produce("mlwatch.predictions", b"{not json")
            bad += 1
        # Labels for 90% of the predictions, 2 s later: the score thresholded
        # at 0.5 (a perfect model), the label a JSON number.
        if i % 10 != 0:
            labels.append({"event_id": f"e{i}", "ts": ts + 2_000, "model": "m",
                           "label": int(ev["prediction"] >= 0.5)})
    # And one for an event that never existed.
    labels.append({"event_id": "ghost", "ts": START_MS + 30_000, "model": "m", "label": 1})
    bad += 1
    for label in sorted(labels, key=lambda l: l["ts"]):
        producer.produce("mlwatch.outcomes", json.dumps(label).encode())
    run_id = uuid.uuid4().hex
    def track(event):
        producer.produce("mlwatch.tracking", key=run_id, value=json.dumps({"run_id": run_id, **event}))
    track({"type": "start", "experiment": "e2e", "run_name": "tansu-run", "tags": {"ci": "yes"},
           "env": {"git_commit": "deadbeef", "python_version": sys.version.split()[0]}})
    track({"type": "params", "params": {"model": "xgb", "max_depth": 6}})
    for step in range(50):
        track({"type": "metrics", "metrics": [{"key": "loss", "value": 1 / (step + 1), "step": step},
                                              {"key": "accuracy", "value": 0.5 + step / 100, "step": step}]})
    track({"type": "end", "status": "FINISHED"})
    producer.produce("mlwatch.tracking", json.dumps({"type": "params", "run_id": "0" * 32, "params": {"a": 1}}))
    bad += 1
    producer.flush(30)

    data = os.path.join(tmp, "data")
    cfg = os.path.join(tmp, "mlwatch.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[kafka]
brokers = "{bootstrap}"
group_id = "e2e"
session_timeout = "6s"
[storage]
url = "{data}"
[window]
size = "1m"
allowed_lateness = "0s"
[checkpoint]
interval = "1s"
[drift]
p_value_threshold = 0.001
[models.m]
reference = "{ref}"
task = "binary"
label_horizon = "1m"
[models.m.features]
x = "numeric"
y = "numeric"
[models.m.drift]
method = {{ x = "ks", y = "ks" }}
""")
    # The run serves Prometheus metrics while it consumes: on this real
    # broker too, every partition's lag falls to 0 once the topics are read.
    port = free_port()
    proc = subprocess.Popen([mlwatch, "run", "--config", cfg, "--until-idle", "8s",
                             "--metrics-listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lags, seen = None, ""
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                seen = r.read().decode()
        except OSError:
            time.sleep(0.2)
            continue
        samples = [line.split() for line in seen.splitlines() if line and not line.startswith("#")]
        lag = [float(v) for k, v in samples if k.startswith("mlwatch_consumer_lag{")
               and 'topic="mlwatch.predictions"' in k]
        events = [float(v) for k, v in samples if k == "mlwatch_events_total"]
        if lag and all(x == 0 for x in lag) and events and events[0] >= WINDOWS * PER_WINDOW:
            lags = lag
            break
        time.sleep(0.25)
    stdout, stderr = proc.communicate(timeout=300)
    if proc.returncode != 0:
        print(stderr, file=sys.stderr)
        raise SystemExit(f"mlwatch run failed with {proc.returncode}")
    assert lags is not None, f"lag never reached 0 on every partition:\n{seen}"
    print(f"metrics: lag 0 on {len(lags)} prediction partitions once drained")

    drift = ds.dataset(os.path.join(data, "drift_results"), format="parquet", partitioning="hive").to_table()
    expected = {
        "window_start": pa.timestamp("ms", tz="UTC"), "window_end": pa.timestamp("ms", tz="UTC"),
        "version": pa.string(), "kind": pa.string(), "feature": pa.string(), "method": pa.string(),
        "statistic": pa.float64(), "p_value": pa.float64(), "p_value_adjusted": pa.float64(),
        "distance": pa.float64(), "threshold": pa.float64(),
        "drifted": pa.bool_(), "n_reference": pa.int64(), "n_current": pa.int64(),
        "baseline": pa.string(), "capped": pa.bool_(),
    }
    for name, typ in expected.items():
        got = drift.schema.field(name).type
        assert got == typ, f"{name}: {got} != {typ}"
    assert "model" in drift.schema.names
    rows = drift.to_pylist()
    assert len(rows) == WINDOWS * 2, rows
    drifted = sorted((r["feature"], r["window_start"].timestamp()) for r in rows if r["drifted"])
    last = (START_MS + (WINDOWS - 1) * 60_000) / 1000
    assert drifted == [("x", last)], drifted
    assert all(r["version"] == "2" and r["n_reference"] == 3000 for r in rows)
    assert all(r["method"] == "ks" and r["baseline"] == "config" and r["kind"] == "feature" for r in rows)

    summary = ds.dataset(os.path.join(data, "drift_summary"), format="parquet", partitioning="hive").to_table()
    assert summary.num_rows == WINDOWS, summary.num_rows
    quality = ds.dataset(os.path.join(data, "data_quality"), format="parquet", partitioning="hive").to_table()
    assert quality.num_rows == WINDOWS * 3, quality.num_rows  # x, y and the prediction

    # The last window's alerts (x drifted, so half the columns: the dataset
    # too; x's shifted values lie beyond the reference's range), from the
    # table and from the broker's alerts topic.
    alerts = ds.dataset(os.path.join(data, "alerts"), format="parquet", partitioning="hive").to_table().to_pylist()
    assert sorted((a["kind"], a["column"] or "") for a in alerts) == \
        [("dataset_drift", ""), ("drift", "x"), ("quality", "x")], alerts
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-alerts",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe(["mlwatch.alerts"])
    produced = []
    deadline = time.time() + 30
    while len(produced) < len(alerts) and time.time() < deadline:
        m = consumer.poll(1.0)
        if m is not None and m.error() is None:
            produced.append((m.key(), json.loads(m.value())))
    consumer.close()
    assert sorted((k, a["alert_id"]) for k, a in produced) == \
        sorted((b"m", a["alert_id"]) for a in alerts), produced

    dead = ds.dataset(os.path.join(data, "dead_letters"), format="parquet", partitioning="hive").to_table()
    assert dead.num_rows == bad, (dead.num_rows, bad)
    assert set(dead.column("reason").to_pylist()) == {"bad_json", "unknown_run", "unmatched_label"}

    # Labels joined to their predictions across the two topics: a perfect
    # model, 90% of each window labelled, no detection.
    perf = ds.dataset(os.path.join(data, "performance"), format="parquet", partitioning="hive").to_table().to_pylist()
    acc = [r for r in perf if r["metric"] == "accuracy"]
    assert len(acc) == WINDOWS and all(r["value"] == 1.0 for r in acc), acc
    assert all(r["n_predictions"] == PER_WINDOW and r["n_labeled"] == PER_WINDOW * 9 // 10 for r in acc), acc
    assert len(perf) == WINDOWS * 8, len(perf)
    assert not os.path.exists(os.path.join(data, "concept_drift")), "a perfect model never drifts"

    # The tracking run, read back with pyarrow.
    tracking = os.path.join(data, "tracking")
    run_log = pq.read_table(os.path.join(tracking, "run_log")).to_pylist()
    assert [(r["run_id"], r["run_name"], r["status"]) for r in run_log if r["status"] != "RUNNING"] == \
        [(run_id, "tansu-run", "FINISHED")], run_log
    assert run_log[0]["git_commit"] == "deadbeef", run_log
    params = {r["key"]: r["value"] for r in pq.read_table(os.path.join(tracking, "params")).to_pylist()}
    assert params == {"model": "xgb", "max_depth": "6"}, params
    metrics = pq.read_table(os.path.join(tracking, "metrics")).to_pylist()
    assert len(metrics) == 100 and max(m["step"] for m in metrics) == 49, len(metrics)
    found = subprocess.run([mlwatch, "runs", "--data", data, "--format", "json", "search",
                            "metrics.accuracy > 0.9 and params.model = 'xgb'"],
                           capture_output=True, text=True, check=True)
    assert [json.loads(l)["run_id"] for l in found.stdout.splitlines()] == [run_id], found.stdout

    sql = subprocess.run([mlwatch, "sql", "--data", data, "--format", "csv",
                          "SELECT feature, count(*) FILTER (WHERE drifted) AS d FROM drift_results GROUP BY feature ORDER BY feature"],
                         capture_output=True, text=True, check=True)
    assert sql.stdout.split() == ["feature,d", "x,1", "y,0"], sql.stdout
    print(f"tansu e2e: ok ({n} events, {bad} dead letters, {len(rows)} drift rows)")


if __name__ == "__main__":
    main()
