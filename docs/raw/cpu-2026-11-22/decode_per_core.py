#!/usr/bin/env python3
"""Decode cost per core: ncfm's cache recipe vs image_dataset_from_directory's, same JPEGs.

ncfm:  ncfm.cache.decode_resized (PIL: draft = JPEG DCT scaling, then an antialiased resize)
guide: what keras.utils.image_dataset_from_directory maps over each file (tf.io.read_file ->
       tf.image.decode_image(channels=3, expand_animations=False) -> tf.image.resize bilinear,
       float32), as eager TF ops
With --parts, also each half alone: the decoding (PIL draft decode; TF decode_image at full
size) and the resize (ncfm's from the draft; TF bilinear, not antialiased), plus the earlier
ncfm recipe (draft, then PIL's bilinear filter) and, for 60 images, each output's mean absolute
difference from a reference (full-resolution decode, Lanczos resize), in 0-255 levels.
Both in this process; CPU time = user + system of the process (all threads), so the figure is
images per CPU-second (the per-core rate) and little affected by other processes' load. The two
alternate in chunks over several rounds; medians are reported.

    .venv/bin/python docs/raw/cpu-2026-11-22/decode_per_core.py /tmp/cpu_bench_data/train --sizes 75,299
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

p = argparse.ArgumentParser()
p.add_argument("train_dir")
p.add_argument("--sizes", default="75,299")
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--json", default=None)
p.add_argument("--parts", action="store_true", help="also time decoding and resizing apart")
a = p.parse_args()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ncfm.cache import decode_resized  # noqa: E402

paths = sorted(str(q) for q in Path(a.train_dir).glob("*/*.jpg"))


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def ours(path, size):
    return decode_resized(path, size)


def guide(path, size):
    img = tf.image.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.image.resize(img, (size, size), method="bilinear").numpy()


def ours_decode_only(path, size):
    from PIL import Image

    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        img.load()


def guide_decode_only(path, size):
    tf.image.decode_image(tf.io.read_file(path), channels=3, expand_animations=False).numpy()


def ours_bilinear(path, size):
    from PIL import Image

    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))


def reference(path, size):
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((size, size), Image.LANCZOS), dtype=np.float64)


PIPELINES = {"ncfm": ours, "guide": guide}
if a.parts:
    PIPELINES.update({"ncfm decode": ours_decode_only, "guide decode": guide_decode_only,
                      "ncfm v1 bilinear": ours_bilinear})


res = {"images": len(paths), "loadavg_start": os.getloadavg()}
for size in [int(s) for s in a.sizes.split(",")]:
    for f in PIPELINES.values():
        f(paths[0], size)
    out = {name: [] for name in PIPELINES}
    wall = {name: [] for name in PIPELINES}
    for r in range(a.rounds):
        for name, f in PIPELINES.items():
            c, t = cpu(), time.perf_counter()
            for q in paths:
                f(q, size)
            out[name].append(len(paths) / (cpu() - c))
            wall[name].append(len(paths) / (time.perf_counter() - t))
    res[size] = {"images_per_cpu_s": {k: statistics.median(v) for k, v in out.items()},
                 "images_per_wall_s": {k: statistics.median(v) for k, v in wall.items()},
                 "all_cpu": out}
    r = res[size]["images_per_cpu_s"]
    print(f"size {size}: ncfm {r['ncfm']:.0f} img/CPU-s, guide {r['guide']:.0f} img/CPU-s, "
          f"ratio {r['ncfm'] / r['guide']:.2f}x", flush=True)
    if a.parts:
        d = {k: 1000 / v for k, v in r.items()}  # CPU-ms per image
        print(f"size {size}, CPU-ms per image: ncfm decode {d['ncfm decode']:.2f} + resize "
              f"{d['ncfm'] - d['ncfm decode']:.2f}; guide decode {d['guide decode']:.2f} + resize "
              f"{d['guide'] - d['guide decode']:.2f}", flush=True)
        error = {name: float(np.mean([np.abs(PIPELINES[name](q, size) - reference(q, size)).mean()
                                      for q in paths[:60]]))
                 for name in ("ncfm", "guide", "ncfm v1 bilinear")}
        res[size]["mean_abs_diff_vs_lanczos"] = error
        print(f"size {size}, mean |difference| from a full-resolution Lanczos resize: "
              + ", ".join(f"{k} {v:.2f}" for k, v in error.items()), flush=True)
res["loadavg_end"] = os.getloadavg()
res["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
print(json.dumps(res, indent=1))
if a.json:
    Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
