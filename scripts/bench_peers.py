"""Peer benchmarks for scripts/bench.py: the Keras-guide baseline and a PyTorch/timm peer.

Everything here is independent of the ncfm package, so it can be imported and run on its own.
Heavy imports (keras, jax, torch, timm, tensorflow) happen inside the functions, so importing this
module is cheap and does not initialise any backend.

Every benchmark returns a flat dict of metrics with (a subset of) these keys:

    name, variant, backend, device, precision, batch_size, image_size,
    time_to_first_step_s   wall time from "nothing built" to the first train step finished (synced)
    train_images_per_s     steady state, after warmup, wall clock between two device syncs
    decode_images_per_s    the input pipeline alone, no model
    predict_views_per_s    inference throughput (one view = one image forward pass)
    predict_first_call_s   first predict call (compile + first batch)
    peak_rss_mb            process-wide peak RSS so far (monotonic over the whole process)
    gpu_peak_mb            peak accelerator memory (torch: of this benchmark; JAX: process-wide)
    data                   what fed the model (and what was excluded from the timing)
    notes                  anything the reader must know to interpret the figures

Helpers: peak_rss_mb(), jax_memory_mb(), mfu(), gpu_info(), markdown_table().
"""

from __future__ import annotations

import gc
import importlib.util
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

# NCFM class order (the submission's column order); the guide baseline reads these folders.
CLASSES = ("ALB", "BET", "DOL", "LAG", "NoF", "OTHER", "SHARK", "YFT")

# InceptionV3 at 299x299: forward FLOPs per image (2 x MACs) and a training step (~3x forward).
INCEPTION_FWD_FLOPS_299 = 11.47e9
INCEPTION_TRAIN_FLOPS_299 = 34.4e9
# Dense bf16 tensor-core peak of an H100 SXM (the H200 has the same compute).
H100_BF16_PEAK_FLOPS = 989e12


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB).

    It is a high-water mark over the whole process: in a process that runs several benchmarks,
    a later one reports at least the peak of every earlier one.
    """
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes there
        return rss / 2**20
    return rss / 1024.0


def _cpu_s(children: bool = False) -> float:
    """User + system CPU seconds of this process (all threads), plus reaped children if asked."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    t = r.ru_utime + r.ru_stime
    if children:
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        t += c.ru_utime + c.ru_stime
    return t


def jax_memory_mb() -> dict:
    """{'bytes_in_use_mb', 'peak_mb'} of the first JAX device, or {} (CPU, or jax not imported).

    JAX has no way to reset its peak counter, so 'peak_mb' is process-wide since JAX started.
    Only looks at jax if something already imported it (never initialises a backend itself).
    """
    if "jax" not in sys.modules:
        return {}
    try:
        import jax

        dev = jax.devices()[0]
        if dev.platform == "cpu":
            return {}
        stats = dev.memory_stats() or {}
    except Exception:  # noqa: BLE001 - memory stats are best effort
        return {}
    out = {}
    if "bytes_in_use" in stats:
        out["bytes_in_use_mb"] = stats["bytes_in_use"] / 2**20
    if "peak_bytes_in_use" in stats:
        out["peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    return out


def flops_per_image(image_size: int, train: bool) -> float:
    """InceptionV3 FLOPs per image at `image_size`, scaled from the 299x299 figure by area.

    The scaling is approximate (the stem's valid-padded convolutions do not scale exactly with
    area) and exact at 299.
    """
    base = INCEPTION_TRAIN_FLOPS_299 if train else INCEPTION_FWD_FLOPS_299
    return base * (image_size / 299.0) ** 2


def mfu(images_per_s, flops_per_image_, peak_flops):
    """Model FLOPs utilisation: achieved model FLOP/s over the hardware peak (None if unknown)."""
    if not images_per_s or not flops_per_image_ or not peak_flops:
        return None
    return float(images_per_s) * float(flops_per_image_) / float(peak_flops)


def _run(cmd, timeout=10):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib():
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(mod: str):
    if mod in sys.modules:
        return getattr(sys.modules[mod], "__version__", "?")
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001
        return None


def gpu_info() -> dict:
    """Describe the machine: GPU (nvidia-smi), JAX devices (if jax is imported), CPU, versions."""
    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_gib": _mem_total_gib(),
        "keras_backend": os.environ.get("KERAS_BACKEND"),
    }
    if shutil.which("nvidia-smi"):
        smi = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                    "--format=csv,noheader"])
        if smi:
            info["nvidia_smi"] = smi.splitlines()
            info["gpu_name"] = smi.splitlines()[0].split(",")[0].strip()
    if "jax" in sys.modules:
        try:
            import jax

            info["jax_devices"] = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
        except Exception as e:  # noqa: BLE001
            info["jax_devices"] = [f"error: {e}"]
    for mod in ("keras", "jax", "jaxlib", "tensorflow", "torch", "timm", "numpy", "PIL"):
        v = _version(mod if mod != "PIL" else "pillow")
        if v:
            info[f"{mod}_version"] = v
    return info


def default_peak_flops(info: dict | None = None):
    """Dense bf16 peak for known GPUs (H100/H200: 989 TFLOP/s), else None."""
    info = info or gpu_info()
    name = (info.get("gpu_name") or "").upper()
    if "H100" in name or "H200" in name or "GH200" in name:
        return H100_BF16_PEAK_FLOPS
    return None


def _fmt(v, spec):
    if v is None or v == "":
        return ""
    if isinstance(v, str):
        return v
    if callable(spec):
        return spec(v)
    try:
        return format(v, spec) if spec else str(v)
    except (TypeError, ValueError):
        return str(v)


def markdown_table(rows, columns) -> str:
    """A GitHub-markdown table.

    rows: list of dicts. columns: list of keys, or of (key, header) / (key, header, fmt) tuples,
    fmt being a format spec like ".1f" or a callable. Missing values print empty; '|' is escaped.
    """
    cols = []
    for c in columns:
        if isinstance(c, str):
            cols.append((c, c, ""))
        elif len(c) == 2:
            cols.append((c[0], c[1], ""))
        else:
            cols.append(tuple(c))
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = [_fmt(r.get(k), f).replace("|", "\\|").replace("\n", " ") for k, _, f in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def list_images(image_dir) -> tuple[list[str], list[int], list[str]]:
    """(paths, int labels, class names) of image_dir/<class>/*.jpg, classes sorted like Keras."""
    root = Path(image_dir)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for i, c in enumerate(classes):
        for p in sorted((root / c).iterdir()):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.name.startswith("."):
                paths.append(str(p))
                labels.append(i)
    if not paths:
        raise FileNotFoundError(f"no images under {root}/<class>/")
    return paths, labels, classes


# --------------------------------------------------------------------------------------------
# (b) the Keras guide's way
# --------------------------------------------------------------------------------------------

def _tf_importable() -> bool:
    if importlib.util.find_spec("tensorflow") is None:
        return False
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def _grain_importable() -> bool:
    return importlib.util.find_spec("grain") is not None


def _keras_sync(model=None):
    """Wait until everything dispatched so far on the accelerator has finished."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        # The JAX trainer keeps the training state in local variables during fit(); blocking on
        # every live array covers it (and everything else in flight).
        jax.block_until_ready(jax.live_arrays())
    elif backend == "tensorflow":
        if model is not None and getattr(model, "optimizer", None) is not None:
            # Reading a variable the train step writes waits for that step.
            keras.ops.convert_to_numpy(model.optimizer.iterations)
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def _decode_batch(paths, image_size):
    """Decode + bilinear-resize JPEGs with PIL (keras.utils.load_img) into a float32 batch.

    Module level so that a multiprocessing pool can pickle it.
    """
    import keras
    import numpy as np

    x = np.empty((len(paths), image_size, image_size, 3), dtype="float32")
    for k, p in enumerate(paths):
        img = keras.utils.load_img(p, color_mode="rgb", target_size=(image_size, image_size),
                                   interpolation="bilinear")
        x[k] = keras.utils.img_to_array(img, dtype="float32")
    return x


def _batch_indices(n_files, batch_size, idx, shuffle, seed):
    """File indices of batch `idx` when batches run over reshuffled passes of n_files files."""
    import numpy as np

    per_pass = max(1, n_files // batch_size)
    order = (np.random.default_rng(seed + idx // per_pass).permutation(n_files) if shuffle
             else np.arange(n_files))
    j = (idx % per_pass) * batch_size
    sel = order[j:j + batch_size]
    if len(sel) < batch_size:  # fewer files than one batch: wrap around
        sel = np.resize(order, batch_size)
    return sel


def _make_guide_pydataset(paths, labels, image_size, batch_size, num_batches, shuffle, seed,
                          workers, use_multiprocessing, max_queue_size=10):
    """A keras.utils.PyDataset that decodes + resizes JPEGs with PIL on every access (no cache).

    This is what image_dataset_from_directory does (decode, bilinear resize to image_size without
    keeping the aspect ratio, float32 batches, integer labels, reshuffled each pass) written the
    way the Keras docs show for a PyDataset, so it needs neither TensorFlow nor grain.
    `num_batches` may exceed one pass over the files: later passes decode everything again.
    """
    import keras
    import numpy as np

    class GuideImageDataset(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                             max_queue_size=max_queue_size)
            self.paths = list(paths)
            self.labels = np.asarray(labels, dtype="int32")

        def __len__(self):
            return num_batches

        def batch_paths(self, idx):
            sel = _batch_indices(len(self.paths), batch_size, idx, shuffle, seed)
            return [self.paths[i] for i in sel], self.labels[sel]

        def __getitem__(self, idx):
            p, y = self.batch_paths(idx)
            return _decode_batch(p, image_size), y

    return GuideImageDataset()


def _guide_model(image_size, num_classes, optimizer, learning_rate):
    import keras
    from keras import layers

    # The guide's augmentation block, inside the model: it runs on the accelerator as part of the
    # compiled train step (and is inactive at inference).
    augmentation = keras.Sequential([
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(0.1),
        layers.RandomZoom(0.1),
        layers.RandomTranslation(0.1, 0.1),
    ], name="augmentation")
    base = keras.applications.InceptionV3(weights=None, include_top=False,
                                          input_shape=(image_size, image_size, 3))
    inputs = keras.Input((image_size, image_size, 3))
    x = augmentation(inputs)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(x)  # InceptionV3 expects [-1, 1]
    x = base(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="guide_inception_v3")
    if optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate)
    else:
        opt = keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def bench_guide_keras(image_dir, image_size=299, batch_size=64, steps=30, warmup_steps=5,
                      mixed_precision=False, variant="auto", workers=None,
                      use_multiprocessing=False, decode_batches=None, predict_batch_size=None,
                      predict_steps=0, optimizer="sgd", learning_rate=1e-3, seed=1337) -> dict:
    """Train InceptionV3 (random init) the Keras guide's way on image_dir/<class>/*.jpg.

    variant: "tf" (keras.utils.image_dataset_from_directory, tf.data; needs TensorFlow),
             "grain" (the same function with format="grain"; needs the grain package),
             "pydataset" (PIL decode + resize in a keras.utils.PyDataset with `workers` threads,
             or processes with use_multiprocessing=True: needs neither), or
             "auto" (tf if TensorFlow is importable, else grain if importable, else pydataset).
    In every variant the JPEGs are decoded and resized again on every pass (nothing cached), and
    RandomFlip/RandomRotation/RandomZoom/RandomTranslation + Rescaling sit inside the model.

    Measures:
      decode_images_per_s: the input pipeline alone (no model), batches after the first
      time_to_first_step_s: dataset + model build + compile + first train step, synced
      train_images_per_s: steps after `warmup_steps`, wall clock between two full device syncs
        (the fit loop itself is left alone: one fit() call of warmup+steps steps, the callback
        only syncs at the start of step `warmup_steps` and at epoch end)
      predict_views_per_s: model.predict over decoded (not augmented) images, if predict_steps
    """
    import keras
    import numpy as np

    workers = workers or min(16, os.cpu_count() or 1)
    predict_batch_size = predict_batch_size or batch_size
    decode_batches = decode_batches or max(2, min(steps, 20))
    if warmup_steps < 1:
        raise ValueError("warmup_steps must be >= 1 (step 0 carries the compilation)")
    if variant == "auto":
        variant = "tf" if _tf_importable() else ("grain" if _grain_importable() else "pydataset")
    backend = keras.backend.backend()
    precision = "mixed_bfloat16" if mixed_precision else "float32"
    res = {
        "name": "keras-guide", "variant": variant, "backend": backend, "precision": precision,
        "batch_size": batch_size, "image_size": image_size, "workers": workers,
        "use_multiprocessing": bool(use_multiprocessing and variant == "pydataset"),
    }
    paths, labels, classes = list_images(image_dir)
    res["n_images"] = len(paths)
    total_steps = warmup_steps + steps

    def make_ds(n_batches, shuffle, bs):
        if variant in ("tf", "grain"):
            kwargs = {"format": "grain"} if variant == "grain" else {}
            ds = keras.utils.image_dataset_from_directory(
                image_dir, labels="inferred", label_mode="int", image_size=(image_size, image_size),
                batch_size=bs, shuffle=shuffle, seed=seed, verbose=False, **kwargs)
            if variant == "tf":
                import tensorflow as tf

                return ds.repeat().prefetch(tf.data.AUTOTUNE)
            return ds.repeat()
        return _make_guide_pydataset(paths, labels, image_size, bs, n_batches, shuffle, seed,
                                     workers, use_multiprocessing)

    # ---- decode throughput of the input pipeline alone -------------------------------------
    ds = make_ds(decode_batches + 1, True, batch_size)
    n = 0
    if variant == "pydataset":
        # the same per-batch function on the same number of workers that fit() would use
        from concurrent.futures import ThreadPoolExecutor
        from multiprocessing.pool import Pool

        ds[0]  # noqa: B018 - warm the filesystem cache / PIL
        jobs = [ds.batch_paths(i)[0] for i in range(1, decode_batches + 1)]
        pool = (Pool(workers) if use_multiprocessing else ThreadPoolExecutor(workers))
        try:
            c0 = _cpu_s(children=use_multiprocessing)
            t0 = time.perf_counter()
            if use_multiprocessing:
                batches = pool.starmap(_decode_batch, [(j, image_size) for j in jobs])
            else:
                batches = pool.map(_decode_batch, jobs, [image_size] * len(jobs))
            for xb in batches:
                n += len(xb)
            t1 = time.perf_counter()
        finally:
            if use_multiprocessing:
                pool.close()
                pool.join()  # reaped children: their CPU time shows in RUSAGE_CHILDREN
            else:
                pool.shutdown()
        c1 = _cpu_s(children=use_multiprocessing)
    else:
        it = iter(ds)
        next(it)
        c0 = _cpu_s()  # tf.data / grain threads run in this process
        t0 = time.perf_counter()
        for _ in range(decode_batches):
            xb, _ = next(it)
            n += int(xb.shape[0])
        t1 = time.perf_counter()
        c1 = _cpu_s()
        del it
    del ds
    res["decode_images_per_s"] = n / (t1 - t0)
    res["decode_images_per_cpu_s"] = n / (c1 - c0) if c1 > c0 else None
    res["decode_images"] = n

    # ---- training -----------------------------------------------------------------------------
    old_policy = keras.config.dtype_policy()
    keras.utils.set_random_seed(seed)
    times = {}

    class _Timer(keras.callbacks.Callback):
        async_safe = True  # keep fit()'s async dispatch as it is; we sync only where we time

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                _keras_sync(self.model)
                times["first_step_done"] = time.perf_counter()
            if batch == warmup_steps:
                _keras_sync(self.model)
                times["steady_start"] = time.perf_counter()
                times["cpu_start"] = _cpu_s()

        def on_epoch_end(self, epoch, logs=None):
            # logs were made into Python floats before this call: the last step has finished
            _keras_sync(self.model)
            times["steady_end"] = time.perf_counter()
            times["cpu_end"] = _cpu_s()

    try:
        if mixed_precision:
            keras.config.set_dtype_policy("mixed_bfloat16")
        t_start = time.perf_counter()
        train_ds = make_ds(total_steps, True, batch_size)
        model = _guide_model(image_size, len(classes), optimizer, learning_rate)
        t_built = time.perf_counter()
        model.fit(train_ds, epochs=1, steps_per_epoch=total_steps, verbose=0,
                  callbacks=[_Timer()])
        res["build_s"] = t_built - t_start
        res["time_to_first_step_s"] = times["first_step_done"] - t_start
        res["train_images_per_s"] = steps * batch_size / (times["steady_end"] - times["steady_start"])
        res["train_steps_timed"] = steps
        # process CPU-seconds (model + tf.data threads) over the timed steps
        res["train_images_per_cpu_s"] = steps * batch_size / (times["cpu_end"] - times["cpu_start"])
        res["peak_rss_mb"] = peak_rss_mb()
        mem = jax_memory_mb() if backend == "jax" else {}
        if mem.get("peak_mb") is not None:
            res["gpu_peak_mb"] = mem["peak_mb"]
        del train_ds

        # ---- prediction (no TTA: the guide predicts each image once) -----------------------
        if predict_steps:
            pred_ds = make_ds(predict_steps + 1, False, predict_batch_size)
            t0 = time.perf_counter()
            model.predict(pred_ds, steps=1, verbose=0)
            res["predict_first_call_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = model.predict(pred_ds, steps=predict_steps, verbose=0)
            dt = time.perf_counter() - t0
            res["predict_views_per_s"] = len(out) / dt
            res["predict_batch_size"] = predict_batch_size
            res["predict_note"] = ("includes decoding and the pipeline start-up of one predict() call "
                                   "(the guide predicts from the JPEGs)")
            del pred_ds
            mem = jax_memory_mb() if backend == "jax" else {}
            if mem.get("peak_mb") is not None:
                res["gpu_peak_mb"] = mem["peak_mb"]
        res["peak_rss_mb"] = peak_rss_mb()
        res["device"] = _keras_device()
        data = {"tf": "keras.utils.image_dataset_from_directory (tf.data), decoded every epoch",
                "grain": "keras.utils.image_dataset_from_directory(format='grain'), decoded every epoch",
                "pydataset": (f"PyDataset, keras.utils.load_img (PIL) decode+bilinear resize every "
                              f"epoch, {workers} {'processes' if res['use_multiprocessing'] else 'threads'}")}
        res["data"] = data[variant]
        notes = ["augmentation layers inside the model (Flip, Rotation 0.1, Zoom 0.1, Translation 0.1)"]
        if variant != "tf":
            notes.append("image_dataset_from_directory(format='tf') needs TensorFlow"
                         + ("; grain not installed either" if variant == "pydataset" else ""))
        if backend == "tensorflow":
            notes.append("TF backend: these augmentation layers turn XLA off for the model")
        if backend == "jax" and res.get("gpu_peak_mb"):
            notes.append("gpu_peak_mb is JAX's process-wide high-water mark")
        res["notes"] = "; ".join(notes)
    finally:
        keras.config.set_dtype_policy(old_policy)
        try:
            del model
        except NameError:
            pass
        keras.backend.clear_session()
        gc.collect()
    return res


def _keras_device() -> str:
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            d = jax.devices()[0]
            return f"{d.platform}:{d.device_kind}"
        if backend == "tensorflow":
            import tensorflow as tf

            return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
        if backend == "torch":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        pass
    return "?"


# --------------------------------------------------------------------------------------------
# (c) the PyTorch peer
# --------------------------------------------------------------------------------------------

def bench_torch_peer(image_size=299, batch_size=64, steps=30, warmup_steps=5, compile=True,
                     amp_dtype="bfloat16", channels_last=True, predict_batch_size=256,
                     predict_steps=10, host_feed=True, host_images=512, num_classes=8,
                     lr=0.01, seed=1337, compile_mode=None, device=None) -> dict:
    """timm inception_v3 (random init) trained with SGD-nesterov, AMP autocast, channels_last and
    torch.compile: what a PyTorch practitioner would run instead.

    Data: uint8 NCHW tensors made once, already on the device (decode and host->device transfer
    are EXCLUDED); the [0,255] -> [-1,1] scaling runs on the device inside the timed step.
    With host_feed=True a second timing feeds the same compiled model from a host uint8 NHWC
    array (`host_images` random images; per step a random batch is gathered with numpy, pinned
    and copied non-blocking: host gather + H2D INCLUDED, JPEG decode still excluded).

    Sync points: torch.cuda.synchronize() after the first step, before and after the timed steps.
    On CPU it falls back to eager float32 (no compile, no autocast) and tiny settings are up to
    the caller; that is only a smoke test.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    try:
        import timm
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"timm is not importable: {e}") from e

    if warmup_steps < 1:
        raise ValueError("warmup_steps must be >= 1 (step 0 carries the compilation)")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = dev.type == "cuda"
    notes = []
    if not on_gpu:
        if compile:
            notes.append("CPU fallback: no torch.compile")
        if amp_dtype:
            notes.append("CPU fallback: float32, no autocast")
        compile, amp_dtype = False, None
        if steps > 3 or predict_steps > 2:
            notes.append("CPU fallback: at most 3 train / 2 predict steps")
        steps, warmup_steps = min(steps, 3), min(warmup_steps, 1)
        predict_steps, host_images = min(predict_steps, 2), min(host_images, 64)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, None: None,
             "float32": None}[amp_dtype]
    mf = torch.channels_last if channels_last else torch.contiguous_format

    def sync():
        if on_gpu:
            torch.cuda.synchronize(dev)

    torch.manual_seed(seed)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)

    res = {"name": "torch-timm", "variant": "synthetic uint8 on device", "backend": "torch",
           "precision": f"amp_{amp_dtype}" if dtype is not None else "float32",
           "batch_size": batch_size, "image_size": image_size,
           "compile": bool(compile), "channels_last": bool(channels_last),
           "device": torch.cuda.get_device_name(dev) if on_gpu else "cpu",
           "torch_version": torch.__version__, "timm_version": timm.__version__}

    # ---- build + first step ------------------------------------------------------------------
    t_start = time.perf_counter()
    model = timm.create_model("inception_v3", pretrained=False, num_classes=num_classes)
    model = model.to(dev, memory_format=mf)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    fwd = torch.compile(model, mode=compile_mode) if compile else model

    def autocast():
        if dtype is None:
            return torch.autocast(dev.type, enabled=False)
        return torch.autocast(dev.type, dtype=dtype)

    def preprocess(x_u8):
        # uint8 NCHW (any memory format) -> float in [-1, 1], channels_last
        x = x_u8.to(dtype=torch.float32).mul_(1.0 / 127.5).sub_(1.0)
        return x.contiguous(memory_format=mf)

    def train_step(x_u8, y):
        x = preprocess(x_u8)
        with autocast():
            logits = fwd(x)
            loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    g = torch.Generator(device="cpu").manual_seed(seed)
    x_dev = torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8,
                          generator=g).to(dev).contiguous(memory_format=mf)
    y_dev = torch.randint(0, num_classes, (batch_size,), generator=g).to(dev)

    train_step(x_dev, y_dev)
    sync()
    res["time_to_first_step_s"] = time.perf_counter() - t_start
    for _ in range(warmup_steps - 1):
        train_step(x_dev, y_dev)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = train_step(x_dev, y_dev)
    sync()
    dt = time.perf_counter() - t0
    res["train_images_per_s"] = steps * batch_size / dt
    res["train_steps_timed"] = steps
    res["final_loss"] = float(loss.detach())
    res["data"] = "synthetic uint8 already on the device: decode + H2D excluded"
    if on_gpu:
        res["gpu_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20

    # ---- same model fed from a host uint8 array -------------------------------------------------
    if host_feed:
        rng = np.random.default_rng(seed)
        host = rng.integers(0, 256, (host_images, image_size, image_size, 3), dtype=np.uint8)
        host_y = rng.integers(0, num_classes, host_images)

        def host_batch():
            idx = rng.integers(0, host_images, batch_size)
            xb = torch.from_numpy(host[idx])  # NHWC gather on the host
            yb = torch.from_numpy(host_y[idx])
            if on_gpu:
                xb, yb = xb.pin_memory(), yb.pin_memory()
            # NHWC -> NCHW view is already channels_last in memory
            return (xb.to(dev, non_blocking=True).permute(0, 3, 1, 2),
                    yb.to(dev, non_blocking=True))

        for _ in range(2):  # a new input layout may recompile: keep it out of the timing
            train_step(*host_batch())
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(*host_batch())  # the next gather overlaps the GPU's work on this step
        sync()
        dt = time.perf_counter() - t0
        res["train_host_feed_images_per_s"] = steps * batch_size / dt
        del host

    # ---- prediction ------------------------------------------------------------------------------
    if predict_steps:
        model.eval()
        xp = torch.randint(0, 256, (predict_batch_size, 3, image_size, image_size),
                           dtype=torch.uint8, generator=g).to(dev).contiguous(memory_format=mf)
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(dev)
        pfwd = torch.compile(model, mode=compile_mode) if compile else model

        @torch.inference_mode()
        def predict_step(x_u8):
            with autocast():
                return torch.softmax(pfwd(preprocess(x_u8)).float(), dim=-1)

        t0 = time.perf_counter()
        predict_step(xp)
        sync()
        res["predict_first_call_s"] = time.perf_counter() - t0
        predict_step(xp)
        sync()
        t0 = time.perf_counter()
        for _ in range(predict_steps):
            out = predict_step(xp)
        sync()
        dt = time.perf_counter() - t0
        res["predict_views_per_s"] = predict_steps * predict_batch_size / dt
        res["predict_batch_size"] = predict_batch_size
        res["predict_note"] = "synthetic uint8 on device, eval + inference_mode, 1 view/image"
        del out
        if on_gpu:
            res["predict_gpu_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20

    res["peak_rss_mb"] = peak_rss_mb()
    if notes:
        res["notes"] = "; ".join(notes)
    del model, fwd, opt, x_dev, y_dev
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    return res
