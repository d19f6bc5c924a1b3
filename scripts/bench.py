#!/usr/bin/env python3
"""Side-by-side throughput benchmark, in ONE process, on the same images and the same model:

  ncfm   this project's pipeline (float32 and mixed bfloat16), training + prediction with TTA
  guide  the Keras guide's way: image_dataset_from_directory-style decoding every epoch,
         augmentation layers inside the model (scripts/bench_peers.py: bench_guide_keras)
  torch  a PyTorch peer: timm inception_v3, AMP bf16, channels_last, torch.compile
         (scripts/bench_peers.py: bench_torch_peer; meant for a GPU, smoke-tests on CPU)

It writes a markdown report (table + ratios + machine + the exact command) and a JSON file with
every figure. Results are saved after every benchmark, so a run cut short keeps what it did.

GPU machine (no TensorFlow; keras carried as wheels in a git-ignored .whl/), one call of
about 8 minutes (--budget-s skips what would start too late; results are saved as it goes):

    python3 -m pip install -q --no-index --no-deps --target .site .whl/*.whl && \\
    export PYTHONPATH=$PWD/.site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1 || exit; \\
    python3 scripts/bench.py --image-size 299 --batch-size 64 --steps 30 --warmup 5 \\
        --n-images 1024 --data-dir /tmp/bench_data --budget-s 420 \\
        --out $OUT/BENCHMARKS.md --json $OUT/bench.json 2>&1 | tee $OUT/bench.log

CPU smoke test:

    KERAS_BACKEND=jax .venv/bin/python scripts/bench.py --image-size 75 --batch-size 8 \\
        --steps 3 --warmup 1 --n-images 64 --out /tmp/bench.md --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Must be settled before keras / jax are imported anywhere in this process.
# JAX would otherwise grab 75% of the GPU and leave PyTorch (same process) too little.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _early_backend_flag():
    """--backend must reach KERAS_BACKEND before keras is imported (which happens lazily)."""
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a == "--backend" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--backend="):
            return a.split("=", 1)[1]
    return None


if _early_backend_flag():
    os.environ["KERAS_BACKEND"] = _early_backend_flag()

for _p in (str(ROOT), str(ROOT / "scripts")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_peers  # noqa: E402  (cheap: imports no backend)
from bench_peers import (  # noqa: E402
    flops_per_image, gpu_info, markdown_table, mfu, peak_rss_mb,
)

# Share of each class in the real NCFM training set (3,777 images), used for synthetic folders.
NCFM_TRAIN_COUNTS = {"ALB": 1719, "BET": 200, "DOL": 117, "LAG": 67, "NoF": 465, "OTHER": 299,
                     "SHARK": 176, "YFT": 734}


# --------------------------------------------------------------------------------------------
# (a) this project's pipeline  --  TO BE FILLED IN
# --------------------------------------------------------------------------------------------

def bench_ncfm(data_dir, image_size=299, batch_size=64, steps=30, warmup_steps=5,
               precision="float32", predict_batch_size=256, predict_steps=10, tta_views=5,
               seed=1337, **kwargs) -> dict:
    """Benchmark this project's own pipeline.  <<< TO BE FILLED IN (owner: ncfm training) >>>

    data_dir holds train/<CLASS>/*.jpg (1280x720 synthetic JPEGs). precision is "float32" or
    "mixed_bfloat16". Return a dict with the same keys as the peers (see bench_peers' docstring);
    the driver fills in name/precision/mfu if absent. Expected:
      decode_images_per_s   the project's decode/cache step alone (images/s)
      time_to_first_step_s  from nothing built to the first synced train step (incl. compile)
      train_images_per_s    steady state after warmup_steps, between two device syncs
      predict_views_per_s   prediction with `tta_views` TTA views (image-views/s)
      predict_first_call_s  compile + first prediction batch
      peak_rss_mb, gpu_peak_mb (bench_peers.jax_memory_mb()["peak_mb"]: process-wide for JAX)
      data, notes           what fed the model and what the timing excludes
      report_lines          optional list of extra lines for the report (e.g. a full-job time)
    Extra keywords come from `--ncfm-opt KEY=VALUE` (repeatable).
    Use bench_peers._keras_sync(model) as the device sync, the way bench_guide_keras does.
    """
    import tempfile

    import keras
    import numpy as np

    from bench_peers import jax_memory_mb, list_images
    from ncfm import runtime
    from ncfm.augment import tta_parameters
    from ncfm.cache import load_images
    from ncfm.model import build_model, build_tta_model, unfreeze_backbone
    from ncfm.batches import make_batches, one_hot
    from ncfm.train import augment_settings, compile_model, make_optimizer, resolve_train_config
    from ncfm.config import TrainConfig

    train_bn = bool(kwargs.get("train_bn", True))  # parity with the peers, which train BatchNorm
    res = {"name": "ncfm", "precision": precision, "batch_size": batch_size, "image_size": image_size,
           "backend": keras.backend.backend()}
    paths, labels, classes = list_images(Path(data_dir) / "train")
    rel = [str(Path(p).relative_to(data_dir)) for p in paths]
    res["n_images"] = len(rel)

    # decode once: the uint8 cache (PIL draft + resize, all cores), timed from cold
    cache_dir = kwargs.get("cache_dir") or tempfile.mkdtemp(prefix="ncfm_bench_cache_")
    t = time.perf_counter()
    pixels = load_images(data_dir, rel, image_size, cache_dir=cache_dir, progress=False)
    res["decode_images_per_s"] = len(rel) / (time.perf_counter() - t)
    res["decode_workers"] = _decode_workers(len(rel))
    if kwargs.get("decode_single", True):
        # the same cache build on one worker, which then runs in this process: its CPU time is
        # visible to getrusage (pool workers come from a forkserver, not from us), so this gives
        # images per CPU-second, the per-core rate, independent of other load on the machine
        n1 = min(len(rel), int(kwargs.get("decode_single_images", 128)))
        # evenly spaced over the (class-sorted) list, so every boat size is represented
        subset = [rel[int(i)] for i in np.linspace(0, len(rel) - 1, n1)]
        one_dir = tempfile.mkdtemp(prefix="ncfm_bench_cache1_")
        c, t = _cpu_s(), time.perf_counter()
        load_images(data_dir, subset, image_size, cache_dir=one_dir, workers=1, progress=False)
        wall, cpu = time.perf_counter() - t, _cpu_s() - c
        res["decode_1worker_images_per_s"] = n1 / wall
        res["decode_images_per_cpu_s"] = n1 / cpu
        import shutil

        shutil.rmtree(one_dir, ignore_errors=True)
    t = time.perf_counter()
    pixels = load_images(data_dir, rel, image_size, cache_dir=cache_dir, progress=False)
    res["cache_hit_s"] = time.perf_counter() - t

    t_start = time.perf_counter()
    runtime.setup(seed, precision)
    # weights="none" resolves the optimizer to Adam (ncfm's from-scratch default; pretrained runs
    # use SGD like the guide): --ncfm-opt optimizer=sgd for a like-for-like optimizer
    cfg = resolve_train_config(TrainConfig(weights="none", image_size=image_size, batch_size=batch_size,
                                     mixed_precision=precision,
                                     optimizer=kwargs.get("optimizer", "auto")))
    model = build_model("inception_v3", "none", image_size, augment=augment_settings(cfg), seed=seed,
                        num_classes=len(classes))
    unfreeze_backbone(model, "", freeze_bn=not train_bn, bn_momentum=0.9)
    total = warmup_steps + steps
    compile_model(model, cfg, make_optimizer(cfg, 1e-3, total))
    y = one_hot([classes[i] for i in labels], classes)
    rows = np.arange(len(rel))
    data = make_batches(pixels, rows, y, batch_size, train=True, seed=seed, workers=4)
    marks = _timed_fit(model, data, total, warmup_steps)
    res["optimizer"] = cfg.optimizer
    res["time_to_first_step_s"] = marks[1] - t_start
    res["train_images_per_s"] = steps * batch_size / (marks["end"] - marks[warmup_steps])
    # CPU-seconds of the whole process (model threads + input pipeline) over the timed steps:
    # less sensitive than wall time to other processes sharing the cores
    res["train_images_per_cpu_s"] = steps * batch_size / (marks[("cpu", "end")]
                                                          - marks[("cpu", warmup_steps)])
    res["train_step_ms"] = 1000 * (marks["end"] - marks[warmup_steps]) / steps
    if kwargs.get("data_on_device"):
        # the same compiled model trained on, fed from the whole cache held on the device
        # (`ncfm train --data-on-device`): only row numbers cross from the host per step
        from ncfm.batches import to_device

        on_device = make_batches(to_device(pixels), rows, y, batch_size, train=True, seed=seed, workers=4)
        again = _timed_fit(model, on_device, total, warmup_steps)
        res["train_on_device_images_per_s"] = steps * batch_size / (again["end"] - again[warmup_steps])
        res.setdefault("report_lines", []).append(
            f"{res['train_on_device_images_per_s']:.1f} train img/s with the cache on the device "
            f"(--data-on-device), against {res['train_images_per_s']:.1f} fed from the host, same model")
        del on_device

    # prediction: every view of a batch in one call, uint8 in, views built on the device
    views = tta_parameters(tta_views)
    tta = build_tta_model(model, views)
    n_pred = min(len(rel), predict_batch_size * max(1, predict_steps))
    batches = make_batches(pixels, rows[:n_pred], None, batch_size=predict_batch_size, workers=4)
    t = time.perf_counter()
    tta.predict(make_batches(pixels, rows[:predict_batch_size], None, batch_size=predict_batch_size),
                verbose=0)
    res["predict_first_call_s"] = time.perf_counter() - t
    t = time.perf_counter()
    out = tta.predict(batches, verbose=0)
    res["predict_views_per_s"] = n_pred * len(views) / (time.perf_counter() - t)
    res["predict_images"] = int(out.shape[0])
    res["tta_views"] = len(views)
    res["predict_batch_size"] = predict_batch_size
    res["gpu_peak_mb"] = jax_memory_mb().get("peak_mb") if res["backend"] == "jax" else None
    if kwargs.get("profile"):
        res.update(_profile_ncfm(model, cfg, pixels, rows, y, batch_size, steps, warmup_steps,
                                 seed, train_bn, res["train_images_per_s"]))
    res["data"] = "uint8 cache (memory-mapped) -> PyDataset (4 threads) -> device; augmentation in the model"
    res["notes"] = (f"full fine-tune, BatchNorm {'trained' if train_bn else 'frozen'}; predict "
                    f"batch {predict_batch_size} images x {len(views)} views per call; timings exclude "
                    f"decoding (measured separately as decode_images_per_s)")
    del model, tta
    keras.backend.clear_session()
    if not kwargs.get("cache_dir"):  # our own temporary cache: do not leave it in /tmp
        import shutil

        del pixels, data, batches
        shutil.rmtree(cache_dir, ignore_errors=True)
    return res


def _timed_fit(model, data, total: int, warmup_steps: int) -> dict:
    """One fit() of `total` steps; device-synced clock and CPU marks at steps 1 and `warmup_steps`
    and at the end."""
    import keras

    from bench_peers import _keras_sync

    marks = {}

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch in (1, warmup_steps):
                _keras_sync(self.model)
                marks[batch] = time.perf_counter()
                marks[("cpu", batch)] = _cpu_s()

        def on_epoch_end(self, epoch, logs=None):
            _keras_sync(self.model)
            marks["end"] = time.perf_counter()
            marks[("cpu", "end")] = _cpu_s()

    model.fit(data, steps_per_epoch=total, epochs=1, callbacks=[Timer()], verbose=0, shuffle=False)
    return marks


def _cpu_s() -> float:
    """User + system CPU seconds of this process (all its threads) so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _decode_workers(n: int) -> int:
    """How many processes ncfm.cache uses for n images with workers=0 (all cores)."""
    from ncfm.cache import _CHUNK
    from ncfm.dataset import cpu_count

    return min(cpu_count(), max(1, n // _CHUNK))


def _profile_ncfm(model, cfg, pixels, rows, y, batch_size, steps, warmup_steps, seed, train_bn,
                  full_rate) -> dict:
    """Where an ncfm train step goes: the same model and optimizer trained once more with the
    augmentation switched off (RandomAugment reduced to a cast), and the input pipeline alone
    (PyDataset batches fetched with no model). Train throughput is measured as in bench_ncfm."""
    from ncfm.model import build_model, unfreeze_backbone
    from ncfm.batches import make_batches
    from ncfm.train import compile_model, make_optimizer

    out = {}
    data = make_batches(pixels, rows, y, batch_size, train=True, seed=seed, workers=4)
    n = max(4, steps)
    data[0]  # noqa: B018
    t = time.perf_counter()
    for i in range(1, n + 1):
        data[i]  # noqa: B018 - one batch: memmap gather + labels
    dt = time.perf_counter() - t
    out["profile_input_batch_ms"] = 1000 * dt / n
    out["profile_input_images_per_s"] = n * batch_size / dt

    off = dict(hflip=False, vflip=False, rotation=0.0, zoom=0.0, shift=0.0, shear=0.0,
               brightness=0.0, contrast=0.0)
    plain = build_model("inception_v3", "none", cfg.image_size, augment=off, seed=seed, num_classes=y.shape[1])
    unfreeze_backbone(plain, "", freeze_bn=not train_bn, bn_momentum=0.9)
    compile_model(plain, cfg, make_optimizer(cfg, 1e-3, warmup_steps + steps))
    marks = _timed_fit(plain, make_batches(pixels, rows, y, batch_size, train=True, seed=seed, workers=4),
                       warmup_steps + steps, warmup_steps)
    rate = steps * batch_size / (marks["end"] - marks[warmup_steps])
    out["profile_train_no_augment_images_per_s"] = rate
    out["profile_train_no_augment_step_ms"] = 1000 * (marks["end"] - marks[warmup_steps]) / steps
    if full_rate:
        # share of a step spent augmenting = 1 - (time per image without) / (time per image with)
        out["profile_augment_share"] = 1.0 - full_rate / rate
    out.setdefault("report_lines", []).append(
        f"profile: input pipeline alone {out['profile_input_batch_ms']:.1f} ms/batch "
        f"({out['profile_input_images_per_s']:.0f} img/s); training with augmentation off "
        f"{rate:.2f} img/s vs {full_rate:.2f} with it (augmentation ~"
        f"{100 * out.get('profile_augment_share', float('nan')):.0f}% of a step)")
    del plain
    return out


# --------------------------------------------------------------------------------------------
# synthetic images
# --------------------------------------------------------------------------------------------

def _class_counts(n: int) -> dict:
    """n images over the 8 classes in NCFM's proportions, at least one per class."""
    total = sum(NCFM_TRAIN_COUNTS.values())
    counts = {c: max(1, round(n * k / total)) for c, k in NCFM_TRAIN_COUNTS.items()}
    diff = n - sum(counts.values())
    counts["ALB"] = max(1, counts["ALB"] + diff)
    return counts


def _write_one(job):
    """Write one 1280x720-ish JPEG: smooth random colour field (sea/deck), noise, a few ellipses
    ("fish", "people"). Compresses to roughly the size of a real NCFM photo, so decode costs
    about the same."""
    import numpy as np
    from PIL import Image, ImageDraw

    path, seed, w, h = job
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (9, 16, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.int16)
    arr = arr + rng.normal(0, 6, arr.shape).astype(np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, w - 200)), int(rng.integers(0, h - 120))
        draw.ellipse([x0, y0, x0 + int(rng.integers(60, 400)), y0 + int(rng.integers(30, 200))],
                     fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    img.save(path, quality=90)
    return path


def make_images(out_dir, n_images, size=(1280, 720), seed=2016, workers=None) -> Path:
    """Write n_images JPEGs to out_dir/train/<CLASS>/img_NNNNN.jpg (reused if already there)."""
    out_dir = Path(out_dir)
    manifest = out_dir / "bench_manifest.json"
    want = {"n_images": n_images, "size": list(size), "seed": seed, "generator": "bench.py v1"}
    if manifest.exists():
        try:
            if json.loads(manifest.read_text()) == want:
                return out_dir
        except (OSError, ValueError):
            pass
    jobs = []
    k = 0
    for cls, cnt in _class_counts(n_images).items():
        d = out_dir / "train" / cls
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.jpg"):
            old.unlink()
        for _ in range(cnt):
            k += 1
            jobs.append((str(d / f"img_{k:05d}.jpg"), seed * 100003 + k, size[0], size[1]))
    workers = workers or min(16, os.cpu_count() or 1)
    if workers > 1:
        # a fresh interpreter per worker: safe even if a backend was already initialised
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            pool.map(_write_one, jobs, chunksize=8)
    else:
        for j in jobs:
            _write_one(j)
    manifest.write_text(json.dumps(want))
    return out_dir


def prepare_data(data_dir, n_images, synth="auto", seed=2016) -> tuple[Path, str]:
    """(data_dir, how) with data_dir/train/<CLASS>/*.jpg holding >= n_images JPEGs.

    synth: "project" (ncfm.synthetic.make_synthetic), "own" (make_images above) or "auto"
    (the project's generator if importable and it works, else our own).
    """
    data_dir = Path(data_dir)
    if synth in ("auto", "project"):
        try:
            import inspect

            from ncfm.synthetic import make_synthetic  # being written in parallel

            marker = data_dir / "bench_project_synth.json"
            want = {"n_train": n_images, "seed": seed}
            if not (marker.exists() and json.loads(marker.read_text()) == want):
                params = inspect.signature(make_synthetic).parameters
                kw = {"n_train": n_images, "scale": 1.0}
                if "seed" in params:
                    kw["seed"] = seed
                for name in params:  # we need (almost) no test set: keep the minutes for training
                    if name.startswith("n_test") or name in ("n_stg1", "n_stg2"):
                        kw[name] = 1
                kw = {k: v for k, v in kw.items() if k in params or any(
                    p.kind == p.VAR_KEYWORD for p in params.values())}
                make_synthetic(data_dir, **kw)
                marker.write_text(json.dumps(want))
            n = sum(1 for _ in (data_dir / "train").glob("*/*.jpg"))
            if n < n_images:
                raise RuntimeError(f"make_synthetic wrote {n} < {n_images} training images")
            return data_dir, (f"ncfm.synthetic.make_synthetic(n_train={n_images}, scale=1.0): "
                              "full-size JPEGs in NCFM's mix of boat sizes")
        except Exception as e:  # noqa: BLE001
            if synth == "project":
                raise
            print(f"[bench] project generator unusable ({type(e).__name__}: {e}); "
                  "using bench.py's own", flush=True)
    make_images(data_dir, n_images, seed=seed)
    return data_dir, f"bench.py make_images({n_images}, 1280x720, JPEG q90)"


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

COLUMNS = [
    ("label", "run"),
    ("precision", "precision"),
    ("data", "data path"),
    ("batch_size", "batch"),
    ("time_to_first_step_s", "first step s", ".1f"),
    ("decode_images_per_s", "decode img/s", ".0f"),
    ("decode_images_per_cpu_s", "decode img/CPU-s", ".1f"),
    ("train_images_per_s", "train img/s", ".1f"),
    ("train_images_per_cpu_s", "train img/CPU-s", ".2f"),
    ("mfu_train", "train MFU", ".1%"),
    ("predict_views_per_s", "predict views/s", ".1f"),
    ("mfu_predict", "predict MFU", ".1%"),
    ("peak_rss_mb", "peak RSS MiB", ".0f"),
    ("gpu_peak_mb", "GPU peak MiB", ".0f"),
    ("error", "error"),
]


def add_derived(row: dict, image_size: int, peak_flops):
    row.setdefault("mfu_train", mfu(row.get("train_images_per_s"),
                                    flops_per_image(image_size, train=True), peak_flops))
    row.setdefault("mfu_predict", mfu(row.get("predict_views_per_s"),
                                      flops_per_image(image_size, train=False), peak_flops))
    if row.get("train_host_feed_images_per_s"):
        row.setdefault("mfu_train_host_feed", mfu(row["train_host_feed_images_per_s"],
                                                  flops_per_image(image_size, True), peak_flops))
    return row


def ratio_rows(rows):
    """ours / guide and ours / torch, for every metric both sides have."""
    ours = [r for r in rows if r.get("name") == "ncfm" and not r.get("error")]
    peers = [r for r in rows if r.get("name") in ("keras-guide", "torch-timm") and not r.get("error")]
    out = []
    metrics = [("train_images_per_s", "train img/s"), ("train_images_per_cpu_s", "train img/CPU-s"),
               ("predict_views_per_s", "predict views/s"),
               ("decode_images_per_s", "decode img/s"),
               ("decode_images_per_cpu_s", "decode img/CPU-s"),
               ("time_to_first_step_s", "first step s (lower is better)")]
    for o in ours:
        for p in peers:
            r = {"pair": f"{o['label']} / {p['label']}"}
            for k, _ in metrics:
                a, b = o.get(k), p.get(k)
                r[k] = (a / b) if (a and b) else None
            out.append(r)
    cols = [("pair", "ours / peer")] + [(k, h, lambda v: f"{v:.2f}x") for k, h in metrics]
    return out, cols


def write_report(path, rows, meta, args):
    lines = [
        "# Benchmarks: ncfm vs the Keras guide vs a PyTorch peer",
        "",
        f"Generated {meta['finished'] or meta['started']} by `scripts/bench.py` "
        f"(all runs in one process, same images, InceptionV3 from random init, "
        f"{args.image_size}x{args.image_size}, 8 classes).",
        "",
        "Command:",
        "",
        "```",
        meta["command"],
        "```",
        "",
        "## Machine",
        "",
    ]
    m = meta["machine"]
    for k in ("gpu_name", "nvidia_smi", "jax_devices", "cpu", "cpu_count", "affinity_cpus",
              "loadavg_start", "loadavg_end", "mem_total_gib", "platform", "python", "keras_backend", "keras_version",
              "jax_version", "jaxlib_version", "tensorflow_version", "torch_version",
              "timm_version", "numpy_version", "PIL_version"):
        if m.get(k) is not None:
            lines.append(f"- {k}: {m[k]}")
    lines += ["", f"Data: {meta['data']}", "",
              "## Results", "", markdown_table(rows, COLUMNS)]
    extra = [r for r in rows if r.get("train_host_feed_images_per_s")]
    for r in extra:
        mf = r.get("mfu_train_host_feed")
        lines.append(f"- {r['label']}: fed from a host uint8 array (gather + H2D included): "
                     f"{r['train_host_feed_images_per_s']:.1f} train img/s"
                     + (f", MFU {mf:.1%}" if mf else "") + ".")
    for r in rows:
        if r.get("predict_first_call_s") is not None:
            lines.append(f"- {r['label']}: first predict call (compile + first batch) "
                         f"{r['predict_first_call_s']:.1f} s; predict batch "
                         f"{r.get('predict_batch_size')}"
                         + (f", {r['tta_views']} TTA views" if r.get("tta_views") else "")
                         + (f"; {r['predict_note']}" if r.get("predict_note") else "") + ".")
    for r in rows:
        if r.get("notes"):
            lines.append(f"- {r['label']}: {r['notes']}.")
        for extra_line in r.get("report_lines") or ():  # free-form lines a benchmark adds
            lines.append(f"- {r['label']}: {extra_line}")
    ratios, rcols = ratio_rows(rows)
    if ratios:
        lines += ["", "## Ratios (same run)", "", markdown_table(ratios, rcols)]
    pf = meta.get("peak_flops")
    lines += [
        "", "## How it is measured", "",
        "- **first step s**: wall time from nothing built (model, optimizer, input pipeline) to "
        "the end of the first training step, device-synced; it contains the compilation.",
        "- **train img/s**: `--steps` steps after `--warmup` steps, wall clock between two device "
        "syncs (JAX: block on every live array; torch: `torch.cuda.synchronize`). Keras runs use "
        "one `fit()` of warmup+steps steps with its async dispatch left alone. Input pipeline "
        "included for ncfm and the guide; the torch row is fed from uint8 tensors already on "
        "the GPU (decode and H2D excluded), its host-feed figure includes a host gather + H2D.",
        "- **decode img/s**: the input pipeline alone, no model (JPEG decode + resize), wall "
        "clock on all the workers it uses (ncfm: one process per core; the guide: tf.data's "
        "parallel map). **decode img/CPU-s**: images per CPU-second (user + system of the "
        "process, all threads), i.e. the per-core rate; for ncfm measured on a one-worker build "
        "that runs in-process, because pool workers are not children whose CPU time we see.",
        "- **predict views/s**: forward passes per second in inference mode (one TTA view of one "
        "image = one view).",
        f"- **MFU**: images/s x InceptionV3 FLOPs per image ({bench_peers.INCEPTION_TRAIN_FLOPS_299/1e9:.1f} "
        f"GFLOP train, {bench_peers.INCEPTION_FWD_FLOPS_299/1e9:.2f} forward at 299, scaled by area "
        f"for other sizes) / peak "
        + ((f"{pf/1e12:g} TFLOP/s "
            + ("(--peak-tflops)" if args.peak_tflops else "(dense bf16 tensor-core peak)")
            + ", for every row, float32 ones too.")
           if pf else "(unknown on this machine: not computed; give --peak-tflops)."),
        "- **peak RSS**: the process's high-water mark so far (rows run in table order, so it "
        "only grows); **GPU peak**: torch's `max_memory_allocated` for its own run, JAX's "
        "process-wide peak for Keras rows.",
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------

class _Skipped(Exception):
    pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--which", default="ncfm,guide,torch",
                   help="comma list of ncfm, guide, torch, run in the order given")
    p.add_argument("--backend", default=None,
                   help="KERAS_BACKEND for this run (default: the environment's, else jax)")
    p.add_argument("--image-size", type=int, default=299)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30, help="timed train steps per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed train steps (>= 1) per run")
    p.add_argument("--n-images", type=int, default=1024, help="synthetic training JPEGs")
    p.add_argument("--data-dir", default=str(ROOT / "runs" / "bench_data"))
    p.add_argument("--synth", choices=("auto", "project", "own"), default="auto")
    p.add_argument("--ncfm-precisions", default="float32,mixed_bfloat16")
    p.add_argument("--guide-precision", choices=("float32", "mixed_bfloat16"), default="float32",
                   help="the guide's default is float32")
    p.add_argument("--guide-variant", choices=("auto", "tf", "grain", "pydataset"),
                   default="auto")
    p.add_argument("--guide-workers", type=int, default=None, help="default min(16, cpus)")
    p.add_argument("--guide-multiprocessing", action="store_true")
    p.add_argument("--guide-predict-steps", type=int, default=10)
    p.add_argument("--guide-decode-batches", type=int, default=None,
                   help="batches timed for the guide's decode rate (default min(steps, 20), >= 2)")
    p.add_argument("--predict-batch-size", type=int, default=256)
    p.add_argument("--predict-steps", type=int, default=10)
    p.add_argument("--tta-views", type=int, default=5)
    p.add_argument("--ncfm-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="extra keyword for bench_ncfm (VALUE parsed as JSON if it can be); "
                        "repeatable")
    p.add_argument("--torch-amp", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--torch-no-compile", action="store_true")
    p.add_argument("--torch-no-channels-last", action="store_true")
    p.add_argument("--torch-no-host-feed", action="store_true")
    p.add_argument("--torch-compile-mode", default=None, help="e.g. max-autotune (slow compile)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="hardware peak for MFU; default 989 on H100/H200, else none")
    p.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    p.add_argument("--json", default=None, help="also write every figure as JSON here")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--budget-s", type=float, default=None,
                   help="skip the benchmarks that would start after this many seconds")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", args.backend or "jax")
    which = [w.strip() for w in args.which.split(",") if w.strip()]
    bad = set(which) - {"ncfm", "guide", "torch"}
    if bad:
        raise SystemExit(f"--which: unknown {sorted(bad)}")
    command = "KERAS_BACKEND=" + os.environ["KERAS_BACKEND"] + " " + shlex.join(
        [Path(sys.executable).name, os.path.relpath(__file__, os.getcwd())] + sys.argv[1:])
    meta = {"started": _dt.datetime.now().isoformat(timespec="seconds"), "finished": None,
            "command": command, "args": vars(args)}
    meta["loadavg_start"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    rows: list[dict] = []

    def save():
        info = gpu_info()
        info["loadavg_start"] = meta.get("loadavg_start")
        info["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
        meta["machine"] = info
        meta["peak_flops"] = (args.peak_tflops * 1e12 if args.peak_tflops
                              else bench_peers.default_peak_flops(info))
        for r in rows:
            add_derived(r, args.image_size, meta["peak_flops"])
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1,
                                                  default=str))
        write_report(args.out, rows, meta, args)

    def run(name, run_precision, fn, **kw):
        label = f"{name} {run_precision}"
        elapsed = time.perf_counter() - t_begin
        print(f"[bench] {label} ... (at {elapsed:.0f} s)", flush=True)
        t0 = time.perf_counter()
        try:
            if args.budget_s and elapsed > args.budget_s:
                raise _Skipped(f"skipped: {elapsed:.0f} s > --budget-s {args.budget_s:.0f}")
            row = fn(**kw)
        except _Skipped as e:
            row = {"error": str(e)}
        except NotImplementedError as e:
            row = {"error": f"not implemented: {e}"}
        except Exception as e:  # noqa: BLE001 - keep going: one failure must not lose the rest
            traceback.print_exc()
            row = {"error": f"{type(e).__name__}: {e}"[:300]}
        row["name"] = name
        row.setdefault("precision", run_precision)
        if not row.get("error"):
            row.setdefault("batch_size", args.batch_size)
            row.setdefault("image_size", args.image_size)
        row["label"] = f"{name} {row['precision']}"  # the precision that actually ran
        row["wall_s"] = time.perf_counter() - t0
        row.setdefault("peak_rss_mb", peak_rss_mb())
        rows.append(row)
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}
        print(f"[bench] {label}: {json.dumps(shown, default=str)}", flush=True)
        save()

    t_begin = t_data = time.perf_counter()
    data_dir, how = prepare_data(args.data_dir, args.n_images, args.synth, seed=2016)
    meta["data"] = (f"{how} in {data_dir}/train ({time.perf_counter() - t_data:.1f} s to "
                    "make or find)")
    print(f"[bench] data: {meta['data']}", flush=True)

    common = dict(image_size=args.image_size, batch_size=args.batch_size, steps=args.steps,
                  warmup_steps=args.warmup)
    ncfm_opts = {}
    for kv in args.ncfm_opt:
        k, _, v = kv.partition("=")
        try:
            ncfm_opts[k.strip().replace("-", "_")] = json.loads(v)
        except ValueError:
            ncfm_opts[k.strip().replace("-", "_")] = v
    def run_ncfm():
        for prec in [p.strip() for p in args.ncfm_precisions.split(",") if p.strip()]:
            run("ncfm", prec, bench_ncfm, data_dir=data_dir, precision=prec,
                predict_batch_size=args.predict_batch_size, predict_steps=args.predict_steps,
                tta_views=args.tta_views, seed=args.seed, **common, **ncfm_opts)

    def run_guide():
        run("keras-guide", args.guide_precision, bench_peers.bench_guide_keras,
            image_dir=data_dir / "train", mixed_precision=args.guide_precision != "float32",
            variant=args.guide_variant, workers=args.guide_workers,
            use_multiprocessing=args.guide_multiprocessing,
            decode_batches=args.guide_decode_batches,
            predict_batch_size=args.predict_batch_size,
            predict_steps=args.guide_predict_steps, seed=args.seed, **common)

    def run_torch():
        amp = None if args.torch_amp == "float32" else args.torch_amp
        run("torch-timm", f"amp_{args.torch_amp}" if amp else "float32",
            bench_peers.bench_torch_peer,
            compile=not args.torch_no_compile, amp_dtype=amp,
            channels_last=not args.torch_no_channels_last,
            predict_batch_size=args.predict_batch_size, predict_steps=args.predict_steps,
            host_feed=not args.torch_no_host_feed, compile_mode=args.torch_compile_mode,
            seed=args.seed, **common)

    # in the order given: the first Keras row in a process also pays one-off backend start-up
    # (e.g. oneDNN kernel generation on CPU), so swapping the order shows that cost
    for w in which:
        {"ncfm": run_ncfm, "guide": run_guide, "torch": run_torch}[w]()
    meta["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    save()
    print(Path(args.out).read_text(), flush=True)
    print(f"[bench] wrote {args.out}" + (f" and {args.json}" if args.json else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
