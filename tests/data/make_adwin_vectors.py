"""Writes adwin_river.json: ADWIN detections from river (the reference the
Rust `stats::detectors::Adwin` is checked against in tests/it/detectors.rs).

Run with river 0.26 installed: python tests/data/make_adwin_vectors.py
"""
import json
import random
from pathlib import Path

from river import drift

import river

def streams():
    rng = random.Random(12345)
    yield "river_doc_example", rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    rng = random.Random(7)
    yield "bernoulli_0.2_to_0.6", [float(rng.random() < (0.2 if i < 2000 else 0.6)) for i in range(5000)]
    rng = random.Random(8)
    yield "gauss_shift_up_down", [rng.gauss(0 if i < 3000 else (1.0 if i < 6000 else -0.5), 1) for i in range(9000)]
    rng = random.Random(9)
    yield "stationary_bernoulli_0.3", [float(rng.random() < 0.3) for i in range(20000)]


cases = []
for name, xs in streams():
    a = drift.ADWIN()
    detections = []
    for i, x in enumerate(xs):
        a.update(x)
        if a.drift_detected:
            detections.append({"index": i, "width": int(a.width)})
    cases.append({
        "name": name,
        "values": xs,
        "detections": detections,
        "final_width": int(a.width),
        "final_variance": a.variance,
        "final_estimation": a.estimation,
    })
out = Path(__file__).with_name("adwin_river.json")
out.write_text(json.dumps({"river_version": river.__version__, "cases": cases}))
print(out, [(c["name"], [d["index"] for d in c["detections"]]) for c in cases])
