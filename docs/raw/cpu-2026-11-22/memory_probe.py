#!/usr/bin/env python3
"""Peak host memory of `ncfm predict` on CPU: end to end, or in two parts.

  command  any command, run as a child (e.g. the real `ncfm predict --stage 2`): the peaks of
           that process and of its whole tree (decode workers included), sampled the same way.

  data   the data path of `ncfm predict --stage S` for ONE fold: decode every test image into the
         uint8 cache (ncfm.cache.load_images_masked on ncfm.dataset.find_test_images' paths, all
         cores), then stream every row through ncfm.predict.predict_views, i.e. make_batches ->
         build_tta_model -> tta.predict -> mean over views, exactly as predict does it, with the
         default CPU batch size. The model is a cheap STAND-IN with the production structure:
         uint8 "image" -> RandomAugment "augment" -> nested Model "classifier" (Rescaling
         "preprocess" -> nested Model "backbone" (one strided conv) -> "pool" -> "dropout" ->
         Dense "probs", 8-way softmax, float32), so build_tta_model wraps it exactly as it wraps
         InceptionV3 (TTAViews resampling every view at full size on the host included). Only the
         backbone's compute and weights differ: a real InceptionV3 over 13k x 8 views would take
         hours on a 2-core CPU.
  model  the model's own footprint: a real InceptionV3 (random init, same input contract) wrapped
         by build_tta_model, predicting N images with the same views and batch size, from a
         uint8 array already in memory. Its peak minus the same process's RSS just before the
         model was built is what the real backbone adds on top of the data path.

A sampler thread reads /proc every 0.1 s: this process's VmRSS split into RssAnon (heap,
tensors: what really has to fit) and RssFile (pages of the memory-mapped cache and shared
libraries: reclaimable, the kernel drops them under pressure), plus every descendant process
(the decode workers). VmHWM (= getrusage ru_maxrss = /usr/bin/time's "Maximum resident set
size") is reported too. Everything goes to a JSON file.

    .venv/bin/python -m ncfm make_synthetic /tmp/mem --n-train 40 --n-test1 1000 --n-test2 12153 --scale 1.0
    /usr/bin/time -v .venv/bin/python docs/raw/cpu-2026-11-22/memory_probe.py data --data-dir /tmp/mem --stage 2 \\
        --size 299 --cache-dir /tmp/mem_cache --json docs/raw/cpu-2026-11-22/memory_data.json
    /usr/bin/time -v .venv/bin/python docs/raw/cpu-2026-11-22/memory_probe.py model --size 299 --n-images 256 \\
        --json docs/raw/cpu-2026-11-22/memory_model.json
    .venv/bin/python docs/raw/cpu-2026-11-22/memory_probe.py command --json docs/raw/cpu-2026-11-22/memory_predict.json -- \\
        .venv/bin/ncfm predict --data-dir /tmp/mem --run /tmp/mem_run --stage 2 --tta 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

KIB = 1024


def _status(pid) -> dict:
    """VmRSS, RssAnon, RssFile, RssShmem, VmHWM of a process in bytes ({} if it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                    out[key] = int(rest.split()[0]) * KIB
    except OSError:
        pass
    return out


def _cpu_ticks(pid) -> float | None:
    """utime + stime of a process in seconds (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Sampler:
    """Peaks of this process and of its process tree, per phase, sampled every `every` s."""

    def __init__(self, every=0.1, root=None):
        self.every = every
        self.root = root or os.getpid()  # the process whose own figures are reported
        self.phase = "start"
        self.peaks: dict[str, dict] = {}
        self.child_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def set_phase(self, name):
        self.sample()
        self.phase = name
        self.sample()

    def sample(self):
        me = _status(self.root)
        pids = _descendants(self.root)
        kids = [_status(p) for p in pids]
        for pid in pids:  # CPU seconds of each descendant, last value seen before it exits
            t = _cpu_ticks(pid)
            if t is not None:
                self.child_cpu[pid] = t
        tree_rss = me.get("VmRSS", 0) + sum(k.get("VmRSS", 0) for k in kids)
        tree_anon = me.get("RssAnon", 0) + sum(k.get("RssAnon", 0) for k in kids)
        cur = {"rss": me.get("VmRSS", 0), "anon": me.get("RssAnon", 0),
               "file": me.get("RssFile", 0), "tree_rss": tree_rss, "tree_anon": tree_anon,
               "worker_rss_max": max((k.get("VmRSS", 0) for k in kids), default=0),
               "hwm": me.get("VmHWM", 0),
               "processes": 1 + len(kids)}
        p = self.peaks.setdefault(self.phase, {})
        for k, v in cur.items():
            p[k] = max(p.get(k, 0), v)

    def _run(self):
        while not self._stop.wait(self.every):
            self.sample()

    def report(self) -> dict:
        mib = {ph: {k: (round(v / 2**20, 1) if k != "processes" else v) for k, v in d.items()}
               for ph, d in self.peaks.items()}
        hwm = max([_status(self.root).get("VmHWM", 0)] + [d.get("hwm", 0) for d in self.peaks.values()])
        return {"peaks_mib_by_phase": mib, "vm_hwm_mib": round(hwm / 2**20, 1)}


def stand_in_model(size: int, seed: int = 0):
    """The production model's structure (ncfm.model.build_model) with a one-conv backbone."""
    import keras

    from ncfm.augment import RandomAugment
    from ncfm.model import preprocessing_layer

    inp = keras.Input((size, size, 3), name="backbone_input")
    feat = keras.layers.Conv2D(16, 7, strides=8, activation="relu", name="conv")(inp)
    backbone = keras.Model(inp, feat, name="backbone")
    pixels = keras.Input((size, size, 3), name="pixels")
    x = preprocessing_layer("tf")(pixels)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.5, seed=seed, name="dropout")(x)
    probs = keras.layers.Dense(8, activation="softmax", dtype="float32", name="probs")(x)
    classifier = keras.Model(pixels, probs, name="classifier")
    raw = keras.Input((size, size, 3), dtype="uint8", name="image")
    return keras.Model(raw, classifier(RandomAugment(seed=seed, name="augment")(raw)),
                       name="ncfm_stand_in")


def run_data(args, sampler: Sampler) -> dict:
    import keras  # noqa: F401  (as in ncfm.predict: the backend is up before the cache is built)
    import numpy as np

    from ncfm import runtime
    from ncfm.augment import tta_parameters
    from ncfm.cache import cache_paths, load_images_masked
    from ncfm.dataset import cpu_count, find_test_images
    from ncfm.predict import default_batch_size, predict_views

    res = {"mode": "data", "backend": runtime.backend(), "size": args.size, "tta": args.tta}
    test, source = find_test_images(args.data_dir, args.stage)
    res["images"] = len(test)
    res["source"] = source
    sampler.set_phase("decode")
    data_path, _ = cache_paths(args.data_dir, list(test.path), args.size, args.cache_dir)
    res["cache_was_warm"] = data_path.exists()
    sampler.sample()
    before = sum(sampler.child_cpu.values())
    t = time.perf_counter()
    pixels, bad = load_images_masked(args.data_dir, list(test.path), args.size,
                                     cache_dir=args.cache_dir, progress=False)
    res["decode_s"] = time.perf_counter() - t
    # decode workers' CPU time (sampled every 0.1 s from /proc: at most one interval missing)
    res["decode_worker_cpu_s"] = sum(sampler.child_cpu.values()) - before
    if res["decode_worker_cpu_s"] > 0:
        res["decode_images_per_cpu_s"] = len(test) / res["decode_worker_cpu_s"]
    res["decode_images_per_s"] = len(test) / res["decode_s"]
    res["decode_workers"] = cpu_count()
    res["unreadable"] = len(bad)
    res["cache_bytes"] = int(pixels.nbytes)

    res["read"] = "make_batches (ncfm.batches.read_rows: pread)"
    sampler.set_phase("build")
    views = tta_parameters(args.tta)
    batch = args.batch_size or default_batch_size(len(views))
    res["batch_size"] = batch
    model = stand_in_model(args.size)
    rows = np.arange(len(test)) if not args.limit else np.arange(min(args.limit, len(test)))
    res["predicted_rows"] = int(len(rows))
    sampler.set_phase("predict")
    t = time.perf_counter()
    probs = predict_views(model, pixels, rows, views, batch, progress=False)
    res["predict_s"] = time.perf_counter() - t
    res["predict_views_per_s"] = len(rows) * len(views) / res["predict_s"]
    res["probs_shape"] = list(probs.shape)
    res["probs_finite"] = bool(np.isfinite(probs).all())
    return res


def run_model(args, sampler: Sampler) -> dict:
    import keras
    import numpy as np

    from ncfm import runtime
    from ncfm.augment import tta_parameters
    from ncfm.model import build_model
    from ncfm.predict import default_batch_size, predict_views

    res = {"mode": "model", "backend": runtime.backend(), "size": args.size, "tta": args.tta,
           "backbone": "inception_v3 (random init)"}
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (args.n_images, args.size, args.size, 3), dtype=np.uint8)
    views = tta_parameters(args.tta)
    batch = args.batch_size or default_batch_size(len(views))
    res.update(batch_size=batch, n_images=args.n_images)
    sampler.sample()
    res["rss_before_model_mib"] = round(_status(os.getpid())["VmRSS"] / 2**20, 1)
    res["anon_before_model_mib"] = round(_status(os.getpid())["RssAnon"] / 2**20, 1)
    sampler.set_phase("build")
    model = build_model("inception_v3", "none", args.size, num_classes=8)
    res["params"] = int(model.count_params())
    sampler.set_phase("predict")
    t = time.perf_counter()
    probs = predict_views(model, pixels, np.arange(args.n_images), views, batch, progress=False)
    res["predict_s"] = time.perf_counter() - t
    res["predict_views_per_s"] = args.n_images * len(views) / res["predict_s"]
    res["probs_shape"] = list(probs.shape)
    del model
    keras.backend.clear_session()
    return res


def run_command(args) -> dict:
    """Run args.command as a child; its own peaks (phase "command") and its tree's."""
    import subprocess

    if not args.command:
        raise SystemExit("command mode: give the command after --, e.g. -- ncfm predict --stage 2")
    child = subprocess.Popen(args.command)
    with Sampler(root=child.pid) as sampler:
        sampler.set_phase("command")
        res = {"mode": "command", "argv": args.command, "exit": child.wait()}
    res.update(sampler.report())
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("data", "model", "command"))
    p.add_argument("--data-dir", default="data")
    p.add_argument("--stage", type=int, default=2)
    p.add_argument("--size", type=int, default=299)
    p.add_argument("--tta", type=int, default=8, help="views (ncfm predict's default: 8)")
    p.add_argument("--batch-size", type=int, default=0,
                   help="images per call; 0 = ncfm.predict.default_batch_size (64 views on CPU)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--limit", type=int, default=0, help="data: predict only the first N rows")
    p.add_argument("--n-images", type=int, default=256, help="model: images to predict")
    p.add_argument("--json", default=None)
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)  # command mode: the command follows --
    args = p.parse_args(argv[:cut])
    args.command = argv[cut + 1:]
    t0 = time.perf_counter()
    if args.mode == "command":
        res = run_command(args)
    else:
        with Sampler() as sampler:
            sampler.set_phase("imports")
            res = (run_data if args.mode == "data" else run_model)(args, sampler)
            sampler.set_phase("end")
        res.update(sampler.report())
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    res["command"] = " ".join([Path(sys.executable).name] + sys.argv)
    text = json.dumps(res, indent=1, default=str)
    print(text, flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
