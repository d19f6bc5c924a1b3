#!/usr/bin/env python3
"""Decode cost per core: ncfm's cache recipe vs image_dataset_from_directory's, same JPEGs.

ncfm:  ncfm.cache.decode_resized (PIL: draft = JPEG DCT scaling, then antialiased bilinear)
guide: what keras.utils.image_dataset_from_directory maps over each file (tf.io.read_file ->
       tf.image.decode_image(channels=3, expand_animations=False) -> tf.image.resize bilinear,
       float32), as eager TF ops
Both in this process; CPU time = user + system of the process (all threads), so the figure is
images per CPU-second (the per-core rate) and little affected by other processes' load. The two
alternate in chunks over several rounds; medians are reported.

    .venv/bin/python docs/cpu/decode_per_core.py /tmp/cpu_bench_data/train --sizes 75,299
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
a = p.parse_args()

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


res = {"images": len(paths), "loadavg_start": os.getloadavg()}
for size in [int(s) for s in a.sizes.split(",")]:
    for f in (ours, guide):
        f(paths[0], size)
    out = {"ncfm": [], "guide": []}
    wall = {"ncfm": [], "guide": []}
    for r in range(a.rounds):
        for name, f in (("ncfm", ours), ("guide", guide)):
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
res["loadavg_end"] = os.getloadavg()
res["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
print(json.dumps(res, indent=1))
if a.json:
    Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
