"""Where the model runs: backend, accelerator, devices, precision, XLA and seeds, decided in one place.

Only this module (and the benchmark) asks backend-specific questions; everything else uses
`keras` and `keras.ops`.
"""

from __future__ import annotations

import contextlib
import os
from functools import lru_cache


def backend() -> str:
    import keras

    return keras.backend.backend()


@lru_cache(maxsize=None)
def accelerator() -> str:
    """'gpu', 'tpu' or 'cpu' for the current Keras backend."""
    name = backend()
    try:
        if name == "jax":
            import jax

            platform = jax.devices()[0].platform
            return {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)
        if name == "tensorflow":
            import tensorflow as tf

            return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
        if name == "torch":
            import torch

            return "gpu" if torch.cuda.is_available() else "cpu"
    except Exception:  # a broken driver is not worth a crash: run on the CPU
        return "cpu"
    return "cpu"


def resolve_precision(setting: str) -> str:
    """'auto' -> mixed_bfloat16 on an accelerator, float32 on a CPU (bf16 is slow on most CPUs)."""
    aliases = {"off": "float32", "float32": "float32", "none": "float32",
               "bf16": "mixed_bfloat16", "bfloat16": "mixed_bfloat16", "mixed_bfloat16": "mixed_bfloat16",
               "fp16": "mixed_float16", "float16": "mixed_float16", "mixed_float16": "mixed_float16"}
    if setting == "auto":
        return "mixed_bfloat16" if accelerator() != "cpu" else "float32"
    if setting not in aliases:
        raise ValueError(f"mixed_precision must be auto, off, bfloat16 or float16; received {setting!r}")
    return aliases[setting]


def resolve_jit(setting: str, devices: int = 1) -> bool:
    """XLA: always with JAX (un-jitted JAX is op-by-op), with TensorFlow only on one accelerator
    (XLA compilation of InceptionV3 on a CPU costs more than it saves), never with torch.

    TensorFlow's XLA cannot run under MirroredStrategy: a replica's compiled step may not touch
    the variables the strategy put on the other devices ("Trying to access resource
    .../replica_1 located in device ...:1 from device ...:0", keras-team/keras#18145; seen here
    with the augmentation's random-seed variables), so several devices with TensorFlow mean XLA off."""
    mirrored = backend() == "tensorflow" and devices > 1
    if setting in ("on", "true", "True", True):
        if mirrored:
            raise ValueError(f"jit_compile=on does not work with TensorFlow on {devices} devices "
                             f"(tf.distribute.MirroredStrategy: XLA cannot reach the other devices' copies of "
                             f"the variables); pass --jit-compile auto or off, or KERAS_BACKEND=jax")
        return True
    if setting in ("off", "false", "False", False):
        return False
    if setting != "auto":
        raise ValueError(f"jit_compile must be auto, on or off; received {setting!r}")
    name = backend()
    return name == "jax" or (name == "tensorflow" and accelerator() != "cpu" and not mirrored)


def resolve_devices(setting: str) -> list[str]:
    """The devices one model trains on: '1' (the default device), 'all', or a number N (the first N).

    Names as keras.distribution.list_devices spells them ('gpu:0', 'cpu:1'): the accelerators when
    there are any, else the host's CPU, which is one device unless the host platform was split
    (JAX: XLA_FLAGS=--xla_force_host_platform_device_count=N; TensorFlow: logical CPU devices
    configured before TensorFlow starts). torch trains on one device only, for now.
    """
    text = str(setting).strip().lower()
    if text != "all" and not (text.isdigit() and int(text) >= 1):
        raise ValueError(f"--devices must be all or a number of devices (1, 2, ...); received devices={setting!r}")
    name = backend()
    if name == "torch":
        import torch

        available = [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
        if (len(available) if text == "all" else int(text)) > 1:
            raise ValueError(f"devices={setting}: training one model on several devices is not supported yet "
                             f"with the torch backend; pass --devices 1 and use --folds to run members side by "
                             f"side, or set KERAS_BACKEND=jax or tensorflow")
        return available[:1]
    import keras

    available = keras.distribution.list_devices()
    if text == "all":
        return available
    if int(text) > len(available):
        raise ValueError(f"devices={setting}, but {name} sees {len(available)} device"
                         f"{'s' * (len(available) > 1)} ({', '.join(available)}); pass --devices "
                         f"{len(available)} or all")
    return available[:int(text)]


def describe_devices(devices: list[str], setting: str = "") -> str:
    """A log line for what --devices chose; empty for the plain one-device case."""
    if len(devices) > 1:
        how = "keras.distribution.DataParallel" if backend() == "jax" else "tf.distribute.MirroredStrategy"
        return f"data-parallel on {len(devices)} devices ({', '.join(devices)}) with {how}"
    if str(setting).strip().lower() == "all":
        why = "" if accelerator() != "cpu" else "; no GPU or TPU found, and the CPU counts as one"
        return f"--devices all: 1 device ({devices[0]}){why}"
    return ""


@contextlib.contextmanager
def data_parallel(devices: list[str]):
    """Within it, models built, compiled, loaded, trained and predicting split each batch across
    `devices` (from resolve_devices) and keep one copy of the weights on each. With one device it
    changes nothing. (The model and its optimizer must be created inside: MirroredStrategy places
    variables when they are made, and JAX's DataParallel lays them out when they are made.)"""
    if len(devices) < 2:
        yield
        return
    name = backend()
    if name == "jax":
        import keras

        with keras.distribution.DataParallel(devices=devices).scope():
            yield
    elif name == "tensorflow":
        with _mirrored_strategy(tuple(devices)).scope():
            yield
    else:  # resolve_devices refuses this first
        raise ValueError(f"data-parallel training is not supported with the {name} backend")


@lru_cache(maxsize=None)
def _mirrored_strategy(devices: tuple[str, ...]):
    """One MirroredStrategy per set of devices and process: a second one numbers its collective
    operations afresh, and the first all-reduce of a fold trained after another in the same
    process then meets the earlier fold's under the same number ("Shape mismatch in the
    collective instance 100" when the second fold resumed in phase 2)."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(list(devices))


def setup(seed: int, precision: str, deterministic: bool = False) -> None:
    """Seeds every generator; sets the global dtype policy; optionally deterministic kernels."""
    import keras

    if deterministic and backend() == "jax":
        # must be in the environment before XLA compiles anything
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()
    if backend() == "jax":
        _jax_compilation_cache()
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(precision)
    if deterministic:
        if backend() == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        elif backend() == "torch":
            import torch

            torch.use_deterministic_algorithms(True, warn_only=True)


def _jax_compilation_cache() -> None:
    """Keep XLA executables on disk: folds 1..k-1 (same model, same shapes) and every later
    predict reuse fold 0's compilation instead of paying it again. NCFM_JAX_CACHE="" disables."""
    import jax

    path = os.environ.get("NCFM_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ncfm", "jax"))
    if path and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)


def visible_devices() -> str | None:
    """The GPUs this process may use as CUDA_VISIBLE_DEVICES says (None: unset, every GPU)."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def describe() -> str:
    return f"Keras {__import__('keras').__version__}, backend {backend()} on {accelerator()}"
