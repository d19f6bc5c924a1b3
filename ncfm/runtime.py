"""Where the model runs: backend, accelerator, devices, precision, XLA and seeds, decided in one place.

Only this module (and the benchmark) asks backend-specific questions; everything else uses
`keras` and `keras.ops`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


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


# ----------------------------------------------------------------------------- precision
PRECISIONS = {"off": "float32", "float32": "float32", "none": "float32",
              "bf16": "mixed_bfloat16", "bfloat16": "mixed_bfloat16", "mixed_bfloat16": "mixed_bfloat16",
              "fp16": "mixed_float16", "float16": "mixed_float16", "mixed_float16": "mixed_float16"}
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo's names for native bfloat16 on x86


@dataclass(frozen=True)
class Device:
    """What the precision rule needs to know about where the model runs; None = not known."""

    kind: str  # "gpu", "tpu" or "cpu"
    name: str = ""  # "Tesla T4", "TPU v4", the CPU's model name
    compute_capability: tuple[int, int] | None = None  # NVIDIA GPUs: (7, 5) for a T4
    cpu_flags: frozenset[str] | None = None  # the CPU's /proc/cpuinfo flags
    backend: str = "tensorflow"


def precision_rule(device: Device) -> tuple[str, str]:
    """(Keras dtype policy, why) for `--mixed-precision auto`: bfloat16 only where the hardware
    computes it natively, float16 with loss scaling on GPUs that lack bfloat16 but have fast
    float16, float32 everywhere else, including whatever could not be found out."""
    what = device.name or device.kind.upper()
    if device.kind == "tpu":
        return "mixed_bfloat16", f"{what}: TPUs compute bfloat16 natively"
    if device.kind == "gpu":
        cc = device.compute_capability
        if cc is None:
            return "float32", (f"{what}: compute capability unknown, so float32 (pass --mixed-precision "
                               f"bfloat16 or float16 if the GPU computes them natively)")
        where = f"{what} compute capability {cc[0]}.{cc[1]}"
        if cc >= (8, 0):  # Ampere and later
            return "mixed_bfloat16", f"{where} computes bfloat16 natively"
        if cc >= (7, 0) or cc in ((5, 3), (6, 0), (6, 2)):  # Volta, Turing; P100; Jetsons
            return "mixed_float16", f"{where} has no native bfloat16; float16 with loss scaling"
        return "float32", f"{where} has neither native bfloat16 nor fast float16"
    if device.kind == "cpu":
        if device.cpu_flags is None:
            return "float32", "CPU: its instruction set is unknown (no readable /proc/cpuinfo), so float32"
        native = [f for f in CPU_BF16_FLAGS if f in device.cpu_flags]
        if not native:
            return "float32", "CPU without AMX or AVX512_BF16: bfloat16 would be emulated, slower than float32"
        if device.backend != "tensorflow":
            # XLA's CPU backend took 1.2x the CPU time of float32 for a small CNN's training step in
            # bfloat16 on an AMX Xeon, where TensorFlow took 0.3x (docs/raw/cpu-2026-11-22/bf16_backends.log);
            # torch's CPU bfloat16 is unmeasured here
            return "float32", (f"CPU with {' and '.join(native)}, but bfloat16 is only known to be faster on "
                               f"TensorFlow's CPU kernels (oneDNN), not on {device.backend}'s")
        return "mixed_bfloat16", (f"CPU with {' and '.join(native)}: TensorFlow's oneDNN computes bfloat16 "
                                  f"natively (1.3-1.4x faster training than float32, docs/raw/cpu-2026-11-22/README.md)")
    return "float32", f"{device.kind}: an unknown kind of device, so float32"


def choose_precision(setting: str, device: Device | None = None) -> tuple[str, str]:
    """(dtype policy, why): `auto` asks `precision_rule` about this machine (or `device`); an
    explicit setting is taken as it is."""
    if setting == "auto":
        return precision_rule(device or probe_device())
    if setting not in PRECISIONS:
        raise ValueError(f"mixed_precision must be auto, off, bfloat16 or float16; received {setting!r}")
    return PRECISIONS[setting], "set by --mixed-precision"


def resolve_precision(setting: str) -> str:
    """The dtype policy `setting` means here (see `choose_precision` for why)."""
    return choose_precision(setting)[0]


@lru_cache(maxsize=None)
def probe_device() -> Device:
    """This process's device as the precision rule sees it. Cheap (one query of the backend, the
    first lines of /proc/cpuinfo) and never raises: what cannot be found out stays None."""
    kind, name, cc = accelerator(), "", None
    try:
        if kind == "gpu":
            name, cc = _gpu_details()
        elif kind == "tpu":
            import jax

            name = jax.devices()[0].device_kind
    except Exception:  # a driver that does not answer: the rule falls back to float32
        pass
    flags, cpu_name = read_cpu_flags()
    return Device(kind=kind, name=name or (cpu_name if kind == "cpu" else ""), compute_capability=cc,
                  cpu_flags=flags, backend=backend())


def accelerator_memory_gib() -> float | None:
    """The first accelerator's memory in GiB on the current backend; None on a CPU or when it cannot
    be told (never raises)."""
    if accelerator() == "cpu":
        return None
    try:
        name = backend()
        if name == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            if stats.get("bytes_limit"):
                return stats["bytes_limit"] / 2**30
        if name == "torch":
            import torch

            return torch.cuda.get_device_properties(0).total_memory / 2**30
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
        return float(out.stdout.split()[0]) / 1024 if out.returncode == 0 and out.stdout.strip() else None
    except Exception:  # a driver that does not answer: the caller keeps its CPU default
        return None


def _gpu_details() -> tuple[str, tuple[int, int] | None]:
    """(name, compute capability) of the first GPU on the current backend."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        return details.get("device_name", ""), _capability(details.get("compute_capability"))
    if name == "jax":
        import jax

        device = jax.devices()[0]
        return device.device_kind, _capability(getattr(device, "compute_capability", None))
    if name == "torch":
        import torch

        return torch.cuda.get_device_name(0), _capability(torch.cuda.get_device_capability(0))
    return "", None


def _capability(value) -> tuple[int, int] | None:
    """(major, minor) from (8, 0), "8.0" or "9.0a"; None for anything else (e.g. AMD's gfx90a)."""
    try:
        if isinstance(value, str):
            major, minor = value.split(".")[:2]
            value = (major, "".join(c for c in minor if c.isdigit()))
        major, minor = value
        return int(major), int(minor)
    except (TypeError, ValueError):
        return None


def cpuinfo_path() -> Path:
    """The file whose `flags` line says what the CPU computes natively. NCFM_CPUINFO replaces
    /proc/cpuinfo (the tests point it at a plain CPU's, so `auto` is float32 on every machine)."""
    return Path(os.environ.get("NCFM_CPUINFO") or "/proc/cpuinfo")


def read_cpu_flags(path: os.PathLike | str | None = None) -> tuple[frozenset[str] | None, str]:
    """(the first CPU's flags, its model name) from /proc/cpuinfo; (None, "") where the file is
    missing or unreadable (macOS, Windows). Stops at the first `flags` line."""
    name = ""
    try:
        with open(path or cpuinfo_path(), encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key == "flags":
                    return frozenset(value.split()), name
    except OSError:
        return None, ""
    return frozenset(), name


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


def check_batch_split(batch_size: int, devices: list[str], setting: str, default_allowed: bool = False) -> None:
    """Refuses a batch size that `devices` cannot share evenly (ValueError naming the flag and a value
    that works): train's --batch-size is the global batch, predict's the images of each call (0 there
    is its default)."""
    n = len(devices)
    if batch_size < 0 or batch_size % n or (batch_size == 0 and not default_allowed):
        raise ValueError(f"--batch-size {batch_size} is the global batch, split evenly across the {n} devices "
                         f"(--devices {setting}); pass a multiple of {n}, e.g. --batch-size "
                         f"{max(n, batch_size - batch_size % n)}" + (", or leave it out for the default"
                                                                     if default_allowed else ""))


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
