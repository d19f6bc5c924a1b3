#!/usr/bin/env python3
"""Where an ncfm train step goes on CPU (TensorFlow backend, no input pipeline).

Same process, same fixed uint8 batch, train_on_batch, the variants interleaved round by round so
that drifting load from other processes hits all of them alike; medians per step are reported.

  ncfm          ncfm.model.build_model + compile_model as scripts/bench.py does (Adam, BN trained)
  ncfm-noaug    the same with every RandomAugment setting off (a cast + clip)
  ncfm-noaug-sgd  ... and the guide's optimizer (SGD nesterov) instead of Adam
  guide         scripts/bench_peers._guide_model (Keras augmentation layers, SGD), float input
  guide-noaug   the same model without the augmentation block; compile's jit_compile="auto" then
                turns XLA ON (the Keras augmentation layers are what keeps it off in `guide`)
  guide-noaug-nojit  ... with jit_compile=False (like every other variant here)
  ncfm-classifier-sgd  ncfm's nested "classifier" alone, float input, SGD
Also: the augmentation layers alone (tf.function, training=True), and build + first step.

    .venv/bin/python docs/raw/cpu-2026-11-22/profile_step.py --size 75 --batch 32 --rounds 5 --steps 3
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

p = argparse.ArgumentParser()
p.add_argument("--size", type=int, default=75)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--only", default="ncfm,ncfm-noaug,ncfm-noaug-sgd,guide,guide-noaug")
p.add_argument("--json", default=None)
a = p.parse_args()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import bench_peers  # noqa: E402
from ncfm.config import TrainConfig  # noqa: E402
from ncfm.model import build_model, unfreeze_backbone  # noqa: E402
from ncfm.train import compile_model, make_optimizer, resolve_config  # noqa: E402

rng = np.random.default_rng(0)
x = rng.integers(0, 256, (a.batch, a.size, a.size, 3), dtype=np.uint8)
labels = rng.integers(0, 8, a.batch)
y1h = np.eye(8, dtype="float32")[labels]
OFF = dict(hflip=False, vflip=False, rotation=0.0, zoom=0.0, shift=0.0, shear=0.0,
           brightness=0.0, contrast=0.0)
res = {"size": a.size, "batch": a.batch, "loadavg_start": os.getloadavg()}


def ncfm_model(aug=True, optimizer="auto"):
    cfg = resolve_config(TrainConfig(weights="none", image_size=a.size, batch_size=a.batch,
                                     mixed_precision="float32", optimizer=optimizer))
    m = build_model("inception_v3", "none", a.size, augment=(dict(
        hflip=cfg.hflip, vflip=cfg.vflip, rotation=cfg.rotation, zoom=cfg.zoom, shift=cfg.shift,
        shear=cfg.shear, brightness=cfg.brightness, contrast=cfg.contrast) if aug else OFF), seed=1, num_classes=8)
    unfreeze_backbone(m, "", freeze_bn=False, bn_momentum=0.9)
    compile_model(m, cfg, make_optimizer(cfg, 1e-3, 1000))
    return m, (x, y1h)


def ncfm_classifier(optimizer="sgd"):
    """The nested "classifier" of the ncfm model alone (float input, no augment layer)."""
    from ncfm.model import classifier_of
    m, _ = ncfm_model(False, optimizer)
    c = classifier_of(m)
    c.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9, nesterov=True),
              loss="categorical_crossentropy", metrics=["accuracy"], jit_compile=False)
    return c, (x.astype("float32"), y1h)


def guide_model(aug=True, jit="auto"):
    m = bench_peers._guide_model(a.size, 8, "sgd", 1e-3)
    if not aug:
        # rebuild without the block: same backbone/head, input straight to Rescaling
        from keras import layers
        base = keras.applications.InceptionV3(weights=None, include_top=False,
                                              input_shape=(a.size, a.size, 3))
        inp = keras.Input((a.size, a.size, 3))
        h = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inp)
        h = layers.GlobalAveragePooling2D()(base(h))
        out = layers.Dense(8, activation="softmax", dtype="float32")(h)
        m = keras.Model(inp, out)
        m.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9, nesterov=True),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=jit)
    return m, (x.astype("float32"), labels)


makers = {"ncfm": lambda: ncfm_model(True), "ncfm-noaug": lambda: ncfm_model(False),
          "ncfm-noaug-sgd": lambda: ncfm_model(False, "sgd"),
          "ncfm-classifier-sgd": lambda: ncfm_classifier("sgd"),
          "guide": lambda: guide_model(True), "guide-noaug": lambda: guide_model(False),
          "guide-noaug-nojit": lambda: guide_model(False, False)}
models, first = {}, {}
for name in a.only.split(","):
    t = time.perf_counter()
    m, data = makers[name]()
    tb = time.perf_counter()
    m.train_on_batch(*data)
    first[name] = {"build_s": tb - t, "first_step_s": time.perf_counter() - tb}
    m.train_on_batch(*data)
    models[name] = (m, data)
    print(name, "built", {k: round(v, 2) for k, v in first[name].items()}, flush=True)
res["first"] = first

def cpu_s():
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


times = {n: [] for n in models}
cpu = {n: [] for n in models}
for r in range(a.rounds):
    for name, (m, data) in models.items():
        c, t = cpu_s(), time.perf_counter()
        for _ in range(a.steps):
            m.train_on_batch(*data)
        times[name].append(1000 * (time.perf_counter() - t) / a.steps)
        cpu[name].append(1000 * (cpu_s() - c) / a.steps)
    print("round", r, {n: round(v[-1]) for n, v in times.items()}, flush=True)
res["step_ms_median"] = {n: statistics.median(v) for n, v in times.items()}
res["step_ms_all"] = times
res["step_cpu_ms_median"] = {n: statistics.median(v) for n, v in cpu.items()}
res["train_images_per_s"] = {n: a.batch * 1000 / v for n, v in res["step_ms_median"].items()}

# augmentation alone, graph mode, training=True
aug = {}
xt = tf.constant(x)
if "ncfm" in models:
    layer = models["ncfm"][0].get_layer("augment")
    aug["ncfm"] = tf.function(lambda t: layer(t, training=True))
if "guide" in models:
    block = models["guide"][0].get_layer("augmentation")
    aug["guide"] = tf.function(lambda t: block(tf.cast(t, tf.float32), training=True))
am = {n: [] for n in aug}
for f in aug.values():
    f(xt)
for r in range(a.rounds):
    for n, f in aug.items():
        t = time.perf_counter()
        for _ in range(a.steps):
            f(xt).numpy()
        am[n].append(1000 * (time.perf_counter() - t) / a.steps)
res["augment_alone_ms_median"] = {n: statistics.median(v) for n, v in am.items()}
res["loadavg_end"] = os.getloadavg()
print(json.dumps(res, indent=1), flush=True)
if a.json:
    Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
