"""Where the model runs: backend, accelerator, precision, XLA and seeds, decided in one place.

Only this module (and the benchmark) asks backend-specific questions; everything else uses
`keras` and `keras.ops`.
"""

from __future__ import annotations

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


def resolve_jit(setting: str) -> bool:
    """XLA: always with JAX (un-jitted JAX is op-by-op), with TensorFlow only on an accelerator
    (XLA compilation of InceptionV3 on a CPU costs more than it saves), never with torch."""
    if setting in ("on", "true", "True", True):
        return True
    if setting in ("off", "false", "False", False):
        return False
    if setting != "auto":
        raise ValueError(f"jit_compile must be auto, on or off; received {setting!r}")
    name = backend()
    return name == "jax" or (name == "tensorflow" and accelerator() != "cpu")


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
