"""One fold on several devices (`ncfm train --devices all|N`): data-parallel with JAX's
keras.distribution.DataParallel and TensorFlow's MirroredStrategy, the global batch split evenly,
padded validation batches that still give the exact validation loss, `ncfm predict --devices`
giving what one device gives, and the refusals.

A CPU is one device unless it is split before its backend starts, so the trainings run in a
fresh process: JAX with XLA_FLAGS=--xla_force_host_platform_device_count=2, TensorFlow with two
logical CPU devices configured first. They use the cheapest model there is (a random
EfficientNetV2-B0 at 32 px, one epoch of two steps).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd
import pytest

from conftest import split_synthetic
from ncfm.cli import main
from ncfm.competition import NCFM_CLASSES as CLASSES

REPO = Path(__file__).resolve().parents[1]
ONE_EPOCH = ["--backbone", "efficientnetv2_b0", "--weights", "none", "--image-size", "32", "--epochs", "1",
             "--head-epochs", "1", "--batch-size", "8", "--max-train-images", "16", "--tensorboard", "false"]
# a fresh process: split the CPU first (TensorFlow), train, then anything else the backend needs
SCRIPT = """
import sys
{prelude}
import ncfm.cli
ncfm.cli._draw_report = lambda runs: None  # the report drawn after training: not about devices
code = ncfm.cli.main({args!r})
{after}
sys.exit(code)
"""
SPLIT_TF_CPU = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""
# A second fold in the same process must get the first one's MirroredStrategy: a new one numbers
# its all-reduces afresh and fails on the first whose shape differs ("Shape mismatch in the
# collective instance"; the cheap check here, the failure itself costs a second training).
SAME_TF_STRATEGY = """
from ncfm import runtime
devices = runtime.resolve_devices("all")
with runtime.data_parallel(devices):
    first = tf.distribute.get_strategy()
with runtime.data_parallel(devices):
    assert tf.distribute.get_strategy() is first, "a second MirroredStrategy in one process"
"""


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """64 synthetic images in 2 folds (about 32 validation images: not a whole validation batch)."""
    return split_synthetic(tmp_path_factory.mktemp("devices"), n_train=64, boats=8)


def train_args(data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--data-dir", str(data), "--fold", "0", "--run", str(run), *extra]

# Then (JAX) predict with the trained fold on both devices and on one: the same submission.
PREDICT_ON_ONE_AND_TWO = """
assert code == 0
for n in ("2", "1"):
    assert ncfm.cli.main(["predict", "--data-dir", {data!r}, "--run", {run!r}, "--tta", "2", "--devices", n,
                          "--out", {run!r} + f"/on{{n}}.csv", "--recompute"]) == 0
"""


# ----------------------------------------------------------------------------- two devices
@pytest.mark.slow
@pytest.mark.parametrize("backend, devices", [("jax", "2"), ("tensorflow", "all")])
def test_one_fold_trains_data_parallel_on_two_cpu_devices(small_data, tmp_path, backend, devices):
    run = tmp_path / "run"
    args = train_args(small_data, run, *ONE_EPOCH, "--devices", devices, "--cache-dir", str(tmp_path / "cache"))
    tf = backend == "tensorflow"
    after = SAME_TF_STRATEGY if tf else PREDICT_ON_ONE_AND_TWO.format(data=str(small_data), run=str(run))
    code = SCRIPT.format(prelude=SPLIT_TF_CPU if tf else "", args=args, after=after)
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND=backend, NCFM_JAX_CACHE=str(tmp_path / "xla"),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    fold_dir = run / "fold0"
    config = json.loads((fold_dir / "config.json").read_text())
    assert (config["backend"], config["devices"], config["device_names"]) == (backend, "2", ["cpu:0", "cpu:1"])
    assert config["jit_compile"] == ("on" if backend == "jax" else "off")  # XLA fails under MirroredStrategy
    assert "data-parallel on 2 devices (cpu:0, cpu:1)" in (fold_dir / "train.log").read_text()
    manifest = pd.read_csv(small_data / "folds.csv")
    oof = pd.read_csv(fold_dir / "oof.csv")
    assert list(oof.image) == list(manifest.image[manifest.fold == 0])  # padding dropped, order kept
    assert len(oof) % 64  # validation batches hold 64: the last one was padded
    # fit's val_loss (padded batches, padding weighted 0) is the best model's log loss on exactly
    # the validation images: the padding changed neither the loss nor the accuracy
    history = pd.read_csv(fold_dir / "history.csv")
    state = json.loads((fold_dir / "state.json").read_text())
    assert len(history) == 1 and state["finished"]
    assert history.val_loss.iloc[0] == pytest.approx(state["oof_log_loss"], rel=1e-4)
    assert history.val_accuracy.iloc[0] == pytest.approx(state["oof_accuracy"], abs=1e-6)
    probs = keras.saving.load_model(fold_dir / "best.keras")(np.zeros((1, 32, 32, 3), "uint8"))
    assert keras.ops.convert_to_numpy(probs).shape == (1, len(CLASSES))  # loads on one device
    if not tf:  # predict split each call across both devices, and gave what one device gives
        assert done.stdout.count("data-parallel on 2 devices (cpu:0, cpu:1)") == 2  # train, then predict
        on_two, on_one = pd.read_csv(run / "on2.csv"), pd.read_csv(run / "on1.csv")
        assert list(on_two.image) == list(on_one.image) and len(on_one) == 6  # stage 2's test images
        np.testing.assert_allclose(on_two[list(CLASSES)], on_one[list(CLASSES)], atol=1e-5)


# ----------------------------------------------------------------------------- refusals
@pytest.fixture
def two_devices(monkeypatch):
    """The backend claims two devices (only resolution runs: every test here stops before using them)."""
    monkeypatch.setattr(keras.distribution, "list_devices", lambda device_type=None: ["cpu:0", "cpu:1"])


def test_a_batch_size_that_does_not_divide_by_the_devices_is_refused(small_data, tmp_path, capsys, two_devices):
    assert main(train_args(small_data, tmp_path / "run", *ONE_EPOCH, "--devices", "2", "--batch-size", "7")) == 2
    err = capsys.readouterr().err
    assert "--batch-size 7 is the global batch" in err and "pass a multiple of 2, e.g. --batch-size 6" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_more_devices_than_there_are_is_refused_naming_those_there_are(small_data, tmp_path, capsys, two_devices):
    assert main(train_args(small_data, tmp_path / "run", *ONE_EPOCH, "--devices", "3")) == 2
    err = capsys.readouterr().err
    assert "devices=3" in err and "2 devices (cpu:0, cpu:1)" in err and "--devices 2 or all" in err


def test_fewer_training_images_than_devices_is_refused_before_anything_is_written(small_data, tmp_path, capsys,
                                                                                two_devices):
    args = train_args(small_data, tmp_path / "run", *ONE_EPOCH, "--devices", "2", "--batch-size", "2")
    assert main([*args, "--max-train-images", "1"]) == 2  # the last --max-train-images wins
    err = capsys.readouterr().err
    assert "training split has 1 image, fewer than the 2 devices" in err and "pass --devices 1" in err
    assert not (tmp_path / "run" / "fold0").exists()  # refused before the fold's first file


def test_predict_refuses_a_batch_size_the_devices_cannot_split_and_devices_there_are_not(small_data, tmp_path, capsys,
                                                                                       two_devices):
    args = ["predict", "--data-dir", str(small_data), "--run", str(tmp_path / "none")]
    assert main([*args, "--devices", "2", "--batch-size", "9"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size 9" in err and "split evenly across the 2 devices" in err and "--batch-size 8" in err
    assert main([*args, "--devices", "3"]) == 2
    assert "devices=3" in capsys.readouterr().err
    assert not (tmp_path / "none").exists() and not (tmp_path / "submissions").exists()


@pytest.mark.parametrize("setting", ["0", "two", "-1", ""])
def test_devices_must_be_all_or_a_positive_number(setting):
    from ncfm.runtime import resolve_devices

    with pytest.raises(ValueError, match="devices must be all or a number"):
        resolve_devices(setting)


def test_all_devices_are_every_device_the_backend_sees_and_the_log_says_so():
    from ncfm.runtime import accelerator, describe_devices, resolve_devices

    devices = resolve_devices("all")
    assert devices == keras.distribution.list_devices() and resolve_devices("1") == devices[:1]
    if len(devices) == 1 and accelerator() == "cpu":  # this machine, unsplit
        assert describe_devices(devices, "all") == f"--devices all: 1 device ({devices[0]}); no GPU or TPU " \
                                                   f"found, and the CPU counts as one"
    assert describe_devices(devices[:1], "1") == ""  # the plain case adds no log line


def test_torch_refuses_several_devices_for_one_model(monkeypatch):
    from ncfm import runtime

    monkeypatch.setattr(runtime, "backend", lambda: "torch")
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=SimpleNamespace(device_count=lambda: 2)))
    for setting in ("2", "all"):
        with pytest.raises(ValueError, match="not supported yet with the torch backend.*--folds"):
            runtime.resolve_devices(setting)
    assert runtime.resolve_devices("1") == ["cuda:0"]


def test_tensorflow_on_several_devices_trains_without_xla(monkeypatch):
    from ncfm import runtime

    monkeypatch.setattr(runtime, "backend", lambda: "tensorflow")
    assert runtime.resolve_jit("auto", devices=2) is False
    with pytest.raises(ValueError, match="jit_compile=on does not work with TensorFlow on 2 devices"):
        runtime.resolve_jit("on", devices=2)
    assert runtime.resolve_jit("on", devices=1) is True


# ----------------------------------------------------------------------------- padded validation
def test_padded_validation_batches_give_the_exact_loss_and_accuracy():
    """Several devices need every batch full, so validation pads its last batch by repeating a
    row; weighted 0 (and the real rows a little more) Keras' means stay those of the real rows."""
    from ncfm.batches import make_batches
    from ncfm.train import compile_model

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (13, 4, 4, 3)).astype("uint8")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 13)]
    rows = np.arange(13)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    compile_model(model, SimpleNamespace(label_smoothing=0.0, jit_compile="off"), keras.optimizers.Adam())
    probs = model.predict(images, verbose=0)
    loss = float(np.mean(-np.log(np.sum(probs * y, axis=1))))
    accuracy = float(np.mean(probs.argmax(1) == y.argmax(1)))
    padded = model.evaluate(make_batches(images, rows, y, batch_size=8, pad=True), return_dict=True, verbose=0)
    assert len(make_batches(images, rows, y, batch_size=8, pad=True)[1][0]) == 8  # 5 real rows, 3 repeats
    assert padded["loss"] == pytest.approx(loss, rel=1e-5)
    assert padded["accuracy"] == pytest.approx(accuracy, abs=1e-6)
