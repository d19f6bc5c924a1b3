"""`--mixed-precision auto`: bfloat16 only where the hardware computes it natively, float16 with
loss scaling on older GPUs, float32 otherwise; the rule on faked devices, the probe on faked
/proc/cpuinfo and drivers, and real float16 steps that are loss-scaled on TensorFlow and JAX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from ncfm import runtime
from ncfm.runtime import Device, choose_precision, precision_rule

TESTS = Path(__file__).resolve().parent
AMX = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"})
AVX512_BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})  # AMD EPYC Zen 4: no AMX
PLAIN = frozenset({"sse4_2", "avx2", "avx512f"})  # AVX-512 without its bfloat16 instructions


# ----------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("name, capability, policy", [
    ("Tesla T4", (7, 5), "mixed_float16"),
    ("Tesla P100-PCIE-16GB", (6, 0), "mixed_float16"),
    ("Tesla V100-SXM2-16GB", (7, 0), "mixed_float16"),
    ("NVIDIA A100-SXM4-40GB", (8, 0), "mixed_bfloat16"),
    ("NVIDIA H100 80GB HBM3", (9, 0), "mixed_bfloat16"),
    ("NVIDIA GeForce GTX 1080", (6, 1), "float32"),  # float16 at 1/64 of its float32 rate
    ("Tesla K80", (3, 7), "float32"),
])
def test_gpus_get_bfloat16_from_compute_capability_8_and_float16_before(name, capability, policy):
    chosen, reason = precision_rule(Device("gpu", name, compute_capability=capability))
    assert chosen == policy
    assert f"{name} compute capability {capability[0]}.{capability[1]}" in reason


def test_a_t4_gets_float16_with_loss_scaling_and_is_told_why():
    assert precision_rule(Device("gpu", "Tesla T4", compute_capability=(7, 5))) == (
        "mixed_float16", "Tesla T4 compute capability 7.5 has no native bfloat16; float16 with loss scaling")


def test_a_gpu_of_unknown_capability_stays_float32_and_says_so():
    policy, reason = precision_rule(Device("gpu", "AMD Instinct MI250X"))
    assert policy == "float32"
    assert "compute capability unknown" in reason and "--mixed-precision" in reason


def test_tpus_get_bfloat16():
    assert precision_rule(Device("tpu", "TPU v5 lite"))[0] == "mixed_bfloat16"


@pytest.mark.parametrize("flags, policy, named", [
    (AMX, "mixed_bfloat16", "amx_bf16"),
    (AVX512_BF16, "mixed_bfloat16", "avx512_bf16"),
    (PLAIN, "float32", "without AMX or AVX512_BF16"),
    (None, "float32", "unknown"),  # no /proc/cpuinfo (macOS, Windows)
])
def test_cpus_get_bfloat16_only_with_native_instructions(flags, policy, named):
    chosen, reason = precision_rule(Device("cpu", cpu_flags=flags))
    assert chosen == policy and named in reason


def test_a_bfloat16_cpu_stays_float32_under_jax():
    # XLA's CPU backend ran bfloat16 slower than float32 on an AMX Xeon; oneDNN (TensorFlow) is the
    # one that uses the instructions
    policy, reason = precision_rule(Device("cpu", cpu_flags=AMX, backend="jax"))
    assert policy == "float32" and "jax" in reason


@pytest.mark.parametrize("setting, policy", [
    ("off", "float32"), ("float32", "float32"), ("none", "float32"),
    ("bfloat16", "mixed_bfloat16"), ("bf16", "mixed_bfloat16"), ("mixed_bfloat16", "mixed_bfloat16"),
    ("float16", "mixed_float16"), ("fp16", "mixed_float16"), ("mixed_float16", "mixed_float16"),
])
def test_an_explicit_setting_is_taken_as_it_is(setting, policy):
    h100 = Device("gpu", "H100", compute_capability=(9, 0))  # auto would say bfloat16 here
    assert choose_precision(setting, h100) == (policy, "set by --mixed-precision")


def test_auto_asks_the_rule_and_a_bad_setting_is_named():
    t4 = Device("gpu", "Tesla T4", compute_capability=(7, 5))
    assert choose_precision("auto", t4) == precision_rule(t4)
    with pytest.raises(ValueError, match="received 'half'"):
        choose_precision("half", t4)


# ----------------------------------------------------------------------------- probing this machine
@pytest.fixture
def fresh_probe():
    """probe_device() asked anew in the test, and again after it (it is cached per process)."""
    runtime.probe_device.cache_clear()
    yield runtime.probe_device
    runtime.probe_device.cache_clear()


def write_cpuinfo(path: Path, flags: str) -> Path:
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nmodel name\t: Test CPU\nflags\t\t: {flags}\n")
    return path


def test_the_cpu_probe_reads_the_flags_line_of_cpuinfo(tmp_path, monkeypatch, fresh_probe):
    monkeypatch.setattr(runtime, "accelerator", lambda: "cpu")
    monkeypatch.setenv("NCFM_CPUINFO", str(write_cpuinfo(tmp_path / "cpuinfo", "fpu sse2 avx512_bf16 amx_bf16")))
    device = fresh_probe()
    assert device.kind == "cpu" and device.name == "Test CPU"
    assert {"amx_bf16", "avx512_bf16"} <= device.cpu_flags
    assert runtime.choose_precision("auto") == precision_rule(device)


def test_a_missing_cpuinfo_means_unknown_flags_not_a_crash(tmp_path, monkeypatch, fresh_probe):
    monkeypatch.setattr(runtime, "accelerator", lambda: "cpu")
    monkeypatch.setenv("NCFM_CPUINFO", str(tmp_path / "no-such-file"))
    assert fresh_probe().cpu_flags is None
    assert runtime.choose_precision("auto")[0] == "float32"
    assert runtime.read_cpu_flags(tmp_path) == (None, "")  # a folder: unreadable too


def test_the_tests_see_a_plain_cpu(fresh_probe):
    # conftest points NCFM_CPUINFO at a CPU without bfloat16, so auto is float32 on any machine
    if runtime.accelerator() != "cpu":
        pytest.skip("runs on an accelerator")
    assert runtime.resolve_precision("auto") == "float32"


def test_the_tensorflow_probe_reads_the_gpus_compute_capability(monkeypatch, fresh_probe):
    import tensorflow as tf

    monkeypatch.setattr(runtime, "accelerator", lambda: "gpu")
    monkeypatch.setattr(runtime, "backend", lambda: "tensorflow")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda device: {"device_name": "Tesla T4", "compute_capability": (7, 5)})
    device = fresh_probe()
    assert (device.kind, device.name, device.compute_capability) == ("gpu", "Tesla T4", (7, 5))
    assert runtime.resolve_precision("auto") == "mixed_float16"


def test_the_jax_probe_reads_the_gpus_compute_capability(monkeypatch, fresh_probe):
    jax = pytest.importorskip("jax")
    h100 = SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3", compute_capability="9.0")
    monkeypatch.setattr(runtime, "accelerator", lambda: "gpu")
    monkeypatch.setattr(runtime, "backend", lambda: "jax")
    monkeypatch.setattr(jax, "devices", lambda *a: [h100])
    device = fresh_probe()
    assert (device.name, device.compute_capability, device.backend) == ("NVIDIA H100 80GB HBM3", (9, 0), "jax")
    assert runtime.resolve_precision("auto") == "mixed_bfloat16"


def test_a_driver_that_fails_leaves_float32_with_a_reason(monkeypatch, fresh_probe):
    import tensorflow as tf

    def broken(*a):
        raise RuntimeError("CUDA driver version is insufficient")

    monkeypatch.setattr(runtime, "accelerator", lambda: "gpu")
    monkeypatch.setattr(runtime, "backend", lambda: "tensorflow")
    monkeypatch.setattr(tf.config, "list_physical_devices", broken)
    policy, reason = runtime.choose_precision("auto")
    assert policy == "float32" and "unknown" in reason


@pytest.mark.parametrize("value, capability", [((8, 6), (8, 6)), ("7.5", (7, 5)), ("9.0a", (9, 0)),
                                               ("gfx90a", None), (None, None)])
def test_compute_capabilities_are_read_in_each_backends_form(value, capability):
    assert runtime._capability(value) == capability


# ----------------------------------------------------------------------------- float16 is loss-scaled
def small_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(8, activation="softmax")(hidden))


def one_float16_step(scaled: bool) -> dict:
    """One Adam step of a small model under mixed_float16 on gradients far below float16's
    smallest number (sample weights 1e-8), compiled by ncfm's compile_model (`scaled`) or by a
    plain compile without loss scaling. Returns the optimizer's class and how far weights moved."""
    from ncfm.config import TrainConfig
    from ncfm.train import compile_model, make_optimizer

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = small_model()
        cfg = TrainConfig(optimizer="adam", jit_compile="off")
        optimizer = make_optimizer(cfg, 1e-2, 10)
        if scaled:
            compile_model(model, cfg, optimizer)
        else:
            model.compile(optimizer=optimizer, loss="categorical_crossentropy", auto_scale_loss=False)
        x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
        y = keras.utils.to_categorical(np.arange(32) % 8, 8)
        before = [np.array(w.numpy()) for w in model.weights]
        model.fit(x, y, sample_weight=np.full(32, 1e-8, "float32"), batch_size=32, epochs=1, verbose=0)
        moved = min(float(np.abs(b - np.asarray(w.numpy())).max()) for b, w in zip(before, model.weights))
        return {"optimizer": type(model.optimizer).__name__, "least_moved": moved,
                "policy": model.dtype_policy.name}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_float16_training_is_loss_scaled_and_its_small_gradients_arrive():
    scaled, unscaled = one_float16_step(scaled=True), one_float16_step(scaled=False)
    assert scaled["policy"] == "mixed_float16"
    assert scaled["optimizer"] == "LossScaleOptimizer"
    assert scaled["least_moved"] > 0  # every weight learned from its tiny gradient
    assert unscaled["least_moved"] == 0  # without loss scaling the same gradients are float16 zeros


@pytest.mark.slow
def test_float16_training_is_loss_scaled_under_jax():
    pytest.importorskip("jax")
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); from test_precision import one_float16_step; "
              "print(json.dumps([one_float16_step(True), one_float16_step(False)]))")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=f"{TESTS.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run([sys.executable, "-c", script, str(TESTS)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    scaled, unscaled = json.loads(done.stdout.strip().splitlines()[-1])
    assert scaled["optimizer"] == "LossScaleOptimizer" and scaled["least_moved"] > 0
    assert unscaled["least_moved"] == 0


def test_the_classifier_compiles_with_loss_scaling_under_float16():
    from ncfm.config import TrainConfig
    from ncfm.model import build_model
    from ncfm.train import compile_model, make_optimizer

    cfg = TrainConfig(optimizer="adam", jit_compile="off")
    keras.mixed_precision.set_global_policy("mixed_float16")  # what runtime.setup does
    try:
        model = build_model("inception_v3", "none", 75, 0.5, {}, seed=0, num_classes=3)
        compile_model(model, cfg, make_optimizer(cfg, 1e-3, 10))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_a_float16_checkpoint_resumes_with_its_loss_scale(tmp_path):
    from ncfm.config import TrainConfig
    from ncfm.train import compile_model, make_optimizer

    cfg = TrainConfig(optimizer="adam", jit_compile="off")
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small_model()
        compile_model(model, cfg, make_optimizer(cfg, 1e-3, 10))
        model.optimizer.build(model.trainable_variables)
        model.optimizer.dynamic_scale.assign(1024.0)
        model.save(tmp_path / "last.keras")
        # a resumed fold loads last.keras after runtime.setup set the same policy
        resumed = keras.saving.load_model(tmp_path / "last.keras")
        assert isinstance(resumed.optimizer, keras.optimizers.LossScaleOptimizer)
        assert float(resumed.optimizer.dynamic_scale.numpy()) == 1024.0  # its state came back too
        compile_model(resumed, cfg, resumed.optimizer)  # what train does mid-phase: not wrapped twice
        assert isinstance(resumed.optimizer.inner_optimizer, keras.optimizers.Adam)
    finally:
        keras.mixed_precision.set_global_policy("float32")
