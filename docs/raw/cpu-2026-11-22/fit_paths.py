"""CPU cost of ncfm's input path at 75 px: the same model and batches through fit(PyDataset) (as
train.py feeds it), fit(numpy arrays) and a train_on_batch loop; two rounds, the first warms up.

    .venv/bin/python docs/raw/cpu-2026-11-22/fit_paths.py | tee docs/raw/cpu-2026-11-22/fit_paths.log
"""
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from ncfm.config import TrainConfig  # noqa: E402
from ncfm.model import build_model  # noqa: E402
from ncfm.batches import make_batches  # noqa: E402
from ncfm.train import augment_settings  # noqa: E402

size, batch, steps = 75, 32, 20
cfg = TrainConfig()
model = build_model("inception_v3", "none", size, 0.5, augment_settings(cfg), seed=0, num_classes=8)
model.compile(keras.optimizers.SGD(1e-2, momentum=0.9), "categorical_crossentropy", jit_compile=False)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (batch * steps, size, size, 3), dtype=np.uint8)
y = np.eye(8, dtype="float32")[rng.integers(0, 8, batch * steps)]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
def measure(name, fn):
    fn()  # warm
    c, t = cpu(), time.time(); fn(); c, t = cpu() - c, time.time() - t
    print(f"{name:28s} {batch*steps/t:7.1f} img/s  {batch*steps/c:6.1f} img/CPU-s", flush=True)
mode = sys.argv[1:] or ["pydataset", "numpy", "tob", "pydataset1"]
for _ in range(2):
    for m in mode:
        if m == "pydataset":
            measure("fit(PyDataset, 2 workers)", lambda: model.fit(make_batches(x, np.arange(len(x)), y, batch, train=True, steps_per_epoch=steps, workers=2), steps_per_epoch=steps, epochs=1, verbose=0))
        if m == "pydataset1":
            measure("fit(PyDataset, 1 worker)", lambda: model.fit(make_batches(x, np.arange(len(x)), y, batch, train=True, steps_per_epoch=steps, workers=1), steps_per_epoch=steps, epochs=1, verbose=0))
        if m == "numpy":
            measure("fit(numpy)", lambda: model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False))
        if m == "tob":
            measure("train_on_batch loop", lambda: [model.train_on_batch(x[i*batch:(i+1)*batch], y[i*batch:(i+1)*batch]) for i in range(steps)])
