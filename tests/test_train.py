"""Training one fold: what a run folder holds, resuming after a kill or a crash mid-checkpoint,
skipping finished folds, and errors a user can act on.

Every training here is a random InceptionV3 at 75 px on the synthetic data of `trained_run`
(96 images, 2 folds). Most tests read the session's trained run; the rest train 16 images
for a few epochs (`--max-train-images 16 --batch-size 8`), which costs seconds per epoch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from conftest import TINY_TRAIN, kill_after_epoch
import ncfm.runs
from ncfm import NcfmError
from ncfm.competition import NCFM_CLASSES as CLASSES
from ncfm.cli import main
from ncfm.fold import FoldCheckpoint

REPO = Path(__file__).resolve().parents[1]
# 2 steps of 8 images per epoch: cheap, yet both phases, dropout and augmentation all run
SMALL = ["--weights", "none", "--image-size", "75", "--batch-size", "8", "--max-train-images", "16",
         "--tensorboard", "false"]


def train_args(data: Path, run: Path, *extra: str, fold: int = 0) -> list[str]:
    return ["train", "--data-dir", str(data), "--fold", str(fold), "--run", str(run), *extra]


def copy_fold(src: Path, dst: Path) -> Path:
    """A private copy of a trained fold; the large checkpoints are hard links (training replaces
    them by rename, never writes into them, so the original stays intact)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".keras":
            os.link(f, dst / f.name)
        elif f.is_file():
            shutil.copy2(f, dst / f.name)
    return dst


def weights_of(path: Path) -> list[np.ndarray]:
    return keras.saving.load_model(path, compile=False).get_weights()


def same_weights(a: list[np.ndarray], b: list[np.ndarray], atol=1e-6) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and np.allclose(x, y, rtol=0, atol=atol) for x, y in zip(a, b))


def snapshot(folder: Path) -> dict:
    return {f.name: (f.stat().st_mtime_ns, f.stat().st_size, f.stat().st_ino)
            for f in folder.iterdir() if f.is_file() and f.name != "train.log"}


# ----------------------------------------------------------------------------- outputs
def test_checkpoints_load_and_predict_probabilities(trained_run):
    fold_dir = trained_run["run"] / "fold0"
    x = np.zeros((2, 75, 75, 3), dtype="uint8")
    for name in ("best.keras", "last.keras"):
        model = keras.saving.load_model(fold_dir / name)
        probs = keras.ops.convert_to_numpy(model(x, training=False))
        assert probs.shape == (2, len(CLASSES)), name
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert keras.saving.load_model(fold_dir / "last.keras").optimizer.iterations.numpy() > 0  # resumable
    # best.keras is for predicting: no optimizer slots (a third of last.keras' bytes with Adam)
    assert getattr(keras.saving.load_model(fold_dir / "best.keras"), "optimizer", None) is None
    assert (fold_dir / "best.keras").stat().st_size < 0.5 * (fold_dir / "last.keras").stat().st_size


def test_config_json_holds_resolved_values(trained_run):
    cfg = json.loads((trained_run["run"] / "fold0" / "config.json").read_text())
    assert cfg["image_size"] == 75
    assert cfg["weights"] == "none"
    assert cfg["optimizer"] == "adam"  # auto -> adam from scratch
    assert cfg["lr"] == 1e-3 and cfg["head_lr"] == 1e-3  # auto (0) resolved
    assert cfg["mixed_precision"] == "float32"  # auto on conftest's CPU without native bfloat16
    assert cfg["precision_reason"].startswith("CPU without AMX or AVX512_BF16")  # and why
    assert cfg["jit_compile"] == "off"  # auto with TensorFlow on a CPU
    assert cfg["freeze_bn"] == "false" and cfg["bn_momentum"] == 0.9  # a random backbone trains BN
    assert (cfg["fold"], cfg["n_folds"], cfg["epochs"], cfg["head_epochs"]) == (0, 2, 2, 1)
    assert cfg["backend"] == keras.backend.backend() and cfg["keras"] == keras.__version__
    assert "auto" not in cfg.values()


@pytest.mark.parametrize("fold", [0, 1])
def test_oof_rows_are_exactly_the_folds_validation_rows(trained_run, fold):
    manifest = pd.read_csv(trained_run["data"] / "folds.csv")
    val = manifest[manifest.fold == fold]
    oof = pd.read_csv(trained_run["run"] / f"fold{fold}" / "oof.csv")
    assert list(oof.columns) == ["image", "label", *CLASSES]
    assert list(oof.image) == list(val.image) and list(oof.label) == list(val.label)
    probs = oof[list(CLASSES)].to_numpy()
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_history_has_both_phases_with_continuous_epochs(trained_run):
    history = pd.read_csv(trained_run["run"] / "fold0" / "history.csv")
    assert list(history.columns) == ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy",
                                     "learning_rate", "seconds"]
    assert list(history.epoch) == [1, 2]  # TINY_TRAIN: 2 epochs, the first on the head only
    assert list(history.phase) == [1, 2]
    assert np.isfinite(history[["loss", "val_loss", "learning_rate"]].to_numpy()).all()


@pytest.mark.parametrize("fold", [0, 1])
def test_best_checkpoint_is_the_epoch_with_the_lowest_val_loss(trained_run, fold):
    fold_dir = trained_run["run"] / f"fold{fold}"
    history = pd.read_csv(fold_dir / "history.csv")
    state = json.loads((fold_dir / "state.json").read_text())
    best = int(history.epoch[history.val_loss.idxmin()])
    assert state["finished"] and state["epoch"] == 2
    assert state["best_epoch"] == best
    assert state["best_val_loss"] == pytest.approx(history.val_loss.min(), rel=1e-6)
    # oof.csv is predicted by best.keras, so its log loss is that epoch's val_loss
    oof = pd.read_csv(fold_dir / "oof.csv")
    labels = oof.label.map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    p = np.clip(oof[list(CLASSES)].to_numpy(), 1e-15, 1 - 1e-15)
    oof_loss = -np.mean(np.log(p[np.arange(len(p)), labels]))
    assert oof_loss == pytest.approx(history.val_loss.min(), abs=2e-4)
    assert state["oof_log_loss"] == pytest.approx(oof_loss, abs=1e-6)


# ----------------------------------------------------------------------------- resume
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ncfm.cli", *args]


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    return env | extra


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--ema", "0.9", "--lr-decay", "0.7"]], ids=["plain", "ema_and_lr_decay"])
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(trained_run, tmp_path, extra):
    """...with the optimizer's average of the weights and its per-variable rates restored (--ema,
    --lr-decay: phase 2 starts from phase 1's averaged weights, resumed or not)."""
    settings = [*SMALL, "--epochs", "4", "--head-epochs", "1", "--checkpoint-seconds", "0",
                "--deterministic", "true", "--cache-dir", str(tmp_path / "cache"), *extra]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    command = _cli(*train_args(trained_run["data"], killed, *settings))

    state = kill_after_epoch(command, _env(), killed / "fold0" / "state.json", epoch=2)
    assert 2 <= state["epoch"] < 4 and not state["finished"] and not (killed / "fold0" / "oof.csv").exists()

    resumed = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming after epoch {state['epoch']}" in (killed / "fold0" / "train.log").read_text()
    uninterrupted = subprocess.run(_cli(*train_args(trained_run["data"], whole, *settings)), env=_env(),
                                   capture_output=True, text=True, timeout=400)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    h_killed = pd.read_csv(killed / "fold0" / "history.csv")
    h_whole = pd.read_csv(whole / "fold0" / "history.csv")
    assert list(h_killed.epoch) == list(h_whole.epoch) == [1, 2, 3, 4]
    assert list(h_killed.phase) == [1, 2, 2, 2]
    np.testing.assert_allclose(h_killed.val_loss, h_whole.val_loss, rtol=1e-6)
    assert same_weights(weights_of(killed / "fold0" / "last.keras"), weights_of(whole / "fold0" / "last.keras"))
    assert same_weights(weights_of(killed / "fold0" / "best.keras"), weights_of(whole / "fold0" / "best.keras"))


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one_and_resumes(trained_run, tmp_path, monkeypatch,
                                                                                 capsys):
    run = tmp_path / "run"
    args = train_args(trained_run["data"], run, *SMALL, "--epochs", "2", "--head-epochs", "2",
                      "--checkpoint-seconds", "0", "--cache-dir", str(tmp_path / "cache"))
    real_save, calls = keras.Model.save, []

    def save_then_crash(self, filepath, *a, **k):
        calls.append(Path(filepath))
        if len(calls) <= 2:  # epoch 1: best.keras, last.keras
            return real_save(self, filepath, *a, **k)
        Path(filepath).write_bytes(b"PK\x03\x04 half a zip")  # epoch 2: the disk fills mid-write
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", save_then_crash)
    assert main(args) == 2
    assert "disk full" in capsys.readouterr().err
    fold_dir = run / "fold0"
    assert len(calls) == 3 and calls[2].name.startswith(".tmp-")  # the crash hit a temp file...
    assert not list(fold_dir.glob(".tmp-*"))  # ...which is cleaned up
    assert json.loads((fold_dir / "state.json").read_text())["epoch"] == 1
    epoch1 = weights_of(fold_dir / "best.keras")  # still loads
    assert same_weights(epoch1, weights_of(fold_dir / "last.keras"), atol=0)

    monkeypatch.undo()
    assert main(args) == 0
    state = json.loads((fold_dir / "state.json").read_text())
    assert state["finished"] and state["epoch"] == 2
    assert list(pd.read_csv(fold_dir / "history.csv").epoch) == [1, 2]
    assert "resuming after epoch 1" in (fold_dir / "train.log").read_text()
    assert not same_weights(epoch1, weights_of(fold_dir / "last.keras"))  # epoch 2 did train


@pytest.mark.parametrize("killed_at_epoch", [1, 2])  # 1: before state.json was ever written
def test_a_run_killed_between_checkpoint_and_state_resumes_from_the_checkpoints_epoch(trained_run, tmp_path,
                                                                                     monkeypatch, killed_at_epoch):
    run = tmp_path / "run"
    args = train_args(trained_run["data"], run, *SMALL, "--epochs", "3", "--head-epochs", "1",
                      "--checkpoint-seconds", "0", "--cache-dir", str(tmp_path / "cache"))
    real_write, state_writes = ncfm.runs.atomic_write_text, []

    def write_or_die(path, text):
        if Path(path).name == "state.json":
            state_writes.append(text)
            if len(state_writes) == killed_at_epoch:  # last.keras holds this epoch, state.json not yet
                raise KeyboardInterrupt  # stands in for SIGKILL at that instant
        return real_write(path, text)

    monkeypatch.setattr(ncfm.runs, "atomic_write_text", write_or_die)
    assert main(args) == 130
    monkeypatch.undo()
    fold_dir = run / "fold0"
    if killed_at_epoch == 1:
        assert not (fold_dir / "state.json").exists()
    else:
        assert json.loads((fold_dir / "state.json").read_text())["epoch"] == 1
    last = keras.saving.load_model(fold_dir / "last.keras")
    steps = int(last.optimizer.iterations.numpy())  # epochs 1 and 2 are the first of their phase
    assert steps > 0

    assert main(args) == 0
    assert f"resuming after epoch {killed_at_epoch}" in (fold_dir / "train.log").read_text()
    history = pd.read_csv(fold_dir / "history.csv")
    assert list(history.epoch) == [1, 2, 3] and list(history.phase) == [1, 2, 2]
    # epoch 2 was not trained twice: phase 2's optimizer took exactly two epochs of steps
    assert int(keras.saving.load_model(fold_dir / "last.keras").optimizer.iterations.numpy()) == 2 * steps
    assert json.loads((fold_dir / "state.json").read_text())["finished"]


def test_a_checkpoint_without_a_readable_record_gives_none(trained_run, tmp_path):
    fold_dir = trained_run["run"] / "fold0"
    assert ncfm.runs.read_record(fold_dir / "last.keras")["state"]["epoch"] == 2  # TINY_TRAIN's last
    assert ncfm.runs.read_record(fold_dir / "best.keras")["best_epoch"] >= 1
    (tmp_path / "empty.keras").write_bytes(b"")
    (tmp_path / "half.keras").write_bytes(b"PK\x03\x04 half a zip")
    with zipfile.ZipFile(fold_dir / "last.keras") as src, zipfile.ZipFile(tmp_path / "older.keras", "w") as dst:
        for item in src.infolist():  # a checkpoint from before records existed
            if item.filename != ncfm.runs.RECORD:
                dst.writestr(item, src.read(item))
    assert keras.saving.load_model(tmp_path / "older.keras", compile=False) is not None
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as z:
        z.writestr(ncfm.runs.RECORD, "not json")
    for name in ("missing.keras", "empty.keras", "half.keras", "older.keras", "bad.keras"):
        assert ncfm.runs.read_record(tmp_path / name) is None, name


def test_a_finished_fold_is_skipped_unless_retrain(trained_run, tmp_path):
    run = tmp_path / "run"
    fold_dir = copy_fold(trained_run["run"] / "fold0", run / "fold0")
    before = snapshot(fold_dir)
    started = time.time()
    assert main(train_args(trained_run["data"], run, *TINY_TRAIN)) == 0
    assert time.time() - started < 10
    assert snapshot(fold_dir) == before
    assert "already trained" in (fold_dir / "train.log").read_text()
    assert main(train_args(trained_run["data"], run, *TINY_TRAIN, "--lr", "0.01")) == 0  # a user expecting a new run
    assert "already trained with other settings (lr: 0.001 -> 0.01)" in (fold_dir / "train.log").read_text()
    assert "--retrain to train it again with these" in (fold_dir / "train.log").read_text()
    assert snapshot(fold_dir) == before

    assert main(train_args(trained_run["data"], run, *SMALL, "--epochs", "1", "--head-epochs", "1",
                           "--retrain", "--cache-dir", str(tmp_path / "cache"))) == 0
    assert list(pd.read_csv(fold_dir / "history.csv").epoch) == [1]
    assert snapshot(fold_dir)["best.keras"][2] != before["best.keras"][2]  # a new file, not the old one
    assert json.loads((fold_dir / "config.json").read_text())["epochs"] == 1


def test_resuming_with_other_settings_is_refused(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    fold_dir = run / "fold0"
    fold_dir.mkdir(parents=True)
    src = trained_run["run"] / "fold0"
    shutil.copy(src / "config.json", fold_dir)
    state = json.loads((src / "state.json").read_text()) | {"epoch": 1, "finished": False}
    (fold_dir / "state.json").write_text(json.dumps(state))

    assert main(train_args(trained_run["data"], run, *TINY_TRAIN, "--lr", "0.01")) == 2
    err = capsys.readouterr().err
    assert "lr: 0.001 -> 0.01" in err and "--retrain" in err and str(fold_dir) in err
    with pytest.raises(NcfmError, match="other settings"):
        from ncfm.config import make_config
        from ncfm.dataset import competition_for
        from ncfm.train import train_fold

        cfg = make_config(None, weights="none", image_size=75, epochs=2, head_epochs=1, batch_size=16, lr=0.01)
        train_fold(cfg, competition_for(trained_run["data"]), trained_run["data"], trained_run["data"] / "folds.csv",
                   0, run)
    assert json.loads((fold_dir / "state.json").read_text()) == state  # nothing touched


def test_a_fold_started_in_another_precision_is_refused_with_the_flag_that_resumes_it(trained_run, tmp_path,
                                                                                      monkeypatch, capsys):
    """A fold started in float16 (auto on a T4) and resumed where auto means float32: its
    optimizer carries a loss scale, so the precision must be given; then the settings check passes."""
    run = tmp_path / "run"
    fold_dir = run / "fold0"
    fold_dir.mkdir(parents=True)
    src = trained_run["run"] / "fold0"
    config = json.loads((src / "config.json").read_text()) | {"mixed_precision": "mixed_float16"}
    (fold_dir / "config.json").write_text(json.dumps(config))
    (fold_dir / "state.json").write_text(json.dumps(json.loads((src / "state.json").read_text()) | {"finished": False}))

    assert main(train_args(trained_run["data"], run, *TINY_TRAIN)) == 2
    err = capsys.readouterr().err
    assert "mixed_precision: 'mixed_float16' -> 'float32'" in err and "--mixed-precision float16 resumes it" in err

    class Reached(Exception):
        pass

    def stop(*a, **k):
        raise Reached

    monkeypatch.setattr("ncfm.cache.load_images", stop)
    monkeypatch.setattr("ncfm.runtime.setup", lambda *a, **k: None)  # leave the global policy alone
    with pytest.raises(Reached):
        main(train_args(trained_run["data"], run, *TINY_TRAIN, "--mixed-precision", "float16"))
    assert json.loads((fold_dir / "config.json").read_text())["precision_reason"] == "set by --mixed-precision"


def test_execution_settings_may_change_on_resume(trained_run, tmp_path, monkeypatch):
    """workers, cache folder, TensorBoard, patience and the checkpoint interval are not part of
    what was trained; changing them passes the settings check (stopped right after it)."""
    run = tmp_path / "run"
    fold_dir = run / "fold0"
    fold_dir.mkdir(parents=True)
    src = trained_run["run"] / "fold0"
    shutil.copy(src / "config.json", fold_dir)
    (fold_dir / "state.json").write_text(json.dumps(json.loads((src / "state.json").read_text()) | {"finished": False}))

    class Reached(Exception):
        pass

    def stop(*a, **k):
        raise Reached

    monkeypatch.setattr("ncfm.cache.load_images", stop)
    with pytest.raises(Reached):
        main(train_args(trained_run["data"], run, *TINY_TRAIN, "--workers", "1", "--patience", "2",
                        "--checkpoint-seconds", "5", "--cache-dir", str(tmp_path / "cache")))


# ----------------------------------------------------------------------------- errors
def test_a_fold_the_manifest_lacks_is_named(trained_run, tmp_path, capsys):
    assert main(train_args(trained_run["data"], tmp_path / "run", *TINY_TRAIN, fold=7)) == 2
    err = capsys.readouterr().err
    assert "fold=7" in err and "folds 0..1" in err
    assert not (tmp_path / "run" / "fold7").exists()


def test_a_manifest_with_one_fold_leaves_nothing_to_train_on_and_says_so(trained_run, tmp_path, capsys):
    manifest = pd.read_csv(trained_run["data"] / "folds.csv").assign(fold=0)  # edited by hand: one fold
    manifest.to_csv(tmp_path / "folds.csv", index=False)
    args = train_args(trained_run["data"], tmp_path / "run", *TINY_TRAIN, "--folds-csv", str(tmp_path / "folds.csv"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "a fold has no training images" in err and "--folds 2 or more" in err
    assert not (tmp_path / "run" / "fold0").exists()


def test_the_cache_on_the_device_is_refused_off_jax_before_any_work(trained_run, tmp_path, capsys):
    assert keras.backend.backend() == "tensorflow"
    assert main(train_args(trained_run["data"], tmp_path / "run", *TINY_TRAIN, "--data-on-device", "true")) == 2
    err = capsys.readouterr().err
    assert "--data-on-device true needs the JAX backend and one device (here: tensorflow, 1 device)" in err
    assert not (tmp_path / "run" / "fold0").exists()


def test_a_missing_manifest_says_to_run_split_train_val(tmp_path, capsys):
    assert main(train_args(tmp_path / "data", tmp_path / "run", *TINY_TRAIN)) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "data" / "folds.csv") in err and "split_train_val" in err


def test_a_missing_weights_file_is_named_before_any_work(trained_run, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "inception.h5"
    args = train_args(trained_run["data"], tmp_path / "run", *TINY_TRAIN, "--weights", str(missing),
                      "--cache-dir", str(tmp_path / "cache"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--weights {missing}: file not found" in err and "notop" in err
    assert not (tmp_path / "cache").exists()  # refused before decoding a single image


def test_image_size_below_the_minimum_is_refused_before_any_work(trained_run, tmp_path, capsys):
    args = train_args(trained_run["data"], tmp_path / "run", *TINY_TRAIN, "--image-size", "60",
                      "--cache-dir", str(tmp_path / "cache"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "image_size=60" in err and "inception_v3" in err and "minimum is 75" in err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("flags, message", [
    (["--ema", "1"], "--ema 1: the average's decay per step is in [0, 1)"),
    (["--lr-decay", "0.7", "--optimizer", "sgd"], "pass --optimizer adamw (or auto)"),
    (["--lr-decay", "0"], "layer-wise decay is a factor in (0, 1]"),
    (["--randaugment", "2"], "--randaugment 2: expected none, trivial, or N,M"),
    (["--precise-bn", "-1"], "--precise-bn -1: the number of training images is 0 (off) or more"),
])
def test_modern_options_out_of_range_are_refused_before_any_work(flags, message, trained_run, tmp_path, capsys):
    assert main(train_args(trained_run["data"], tmp_path / "run", *flags, "--cache-dir", str(tmp_path / "cache"))) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cache").exists() and not list((tmp_path / "run").rglob("*.json"))


def test_imagenet_weights_that_cannot_download_ask_for_a_path(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    from ncfm.model import build_model

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # no cached weights file
    attempts = []

    def offline(fname, origin=None, *a, **k):
        attempts.append(origin)
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(NcfmError, match=r"could not download ImageNet weights for InceptionV3.*--weights PATH"):
        build_model("inception_v3", "imagenet", 75, num_classes=8)
    assert attempts and "inception_v3" in attempts[0]


def test_imagenet_weights_come_from_the_keras_cache_when_present(tmp_path, monkeypatch):
    from ncfm.model import BACKBONES, resolve_weights

    spec = BACKBONES["inception_v3"]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert resolve_weights("imagenet", spec) == "imagenet"
    cached = tmp_path / "models" / spec.weights_file
    cached.parent.mkdir()
    cached.write_bytes(b"")
    assert resolve_weights("imagenet", spec) == str(cached)


def test_a_retrain_killed_before_its_first_checkpoint_gets_the_old_fold_back_on_the_next_run(trained_run, tmp_path):
    run = tmp_path / "run"
    old = copy_fold(trained_run["run"] / "fold0", run / ".fold0.replaced")  # as a SIGKILLed retrain left it
    before = snapshot(old)
    (run / "fold0").mkdir()
    (run / "fold0" / "config.json").write_text("{}")  # the new run had written no checkpoint yet
    assert main(train_args(trained_run["data"], run, *TINY_TRAIN)) == 0
    assert snapshot(run / "fold0") == before and not old.exists()
    assert "already trained" in (run / "fold0" / "train.log").read_text()

    copy_fold(trained_run["run"] / "fold0", old)  # now the new fold has its checkpoint: the old one goes
    assert main(train_args(trained_run["data"], run, *TINY_TRAIN)) == 0
    assert not old.exists() and snapshot(run / "fold0") == before


def test_resuming_after_the_split_changed_is_refused(trained_run, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(trained_run["data"], data, ignore=shutil.ignore_patterns("cache"))
    run = tmp_path / "run"
    fold_dir = copy_fold(trained_run["run"] / "fold0", run / "fold0")
    state = json.loads((fold_dir / "state.json").read_text())
    (fold_dir / "state.json").write_text(json.dumps(state | {"finished": False}))  # interrupted
    manifest = pd.read_csv(data / "folds.csv")
    moved = manifest.index[manifest.fold == 1][0]
    manifest.loc[moved, "fold"] = 0  # e.g. split_train_val --force with other settings
    manifest.to_csv(data / "folds.csv", index=False)
    before = snapshot(fold_dir)
    assert main(train_args(data, run, *TINY_TRAIN)) == 2
    err = capsys.readouterr().err
    assert "is not the split" in err and "--retrain" in err
    assert snapshot(fold_dir) == before


# ----------------------------------------------------------------------------- early stopping
def scripted_checkpoint(tmp_path, state: dict | None = None, **settings):
    """A classifier's FoldCheckpoint on a stand-in model, to be driven with scripted val_losses (no
    training). Returns (callback, model); its lines go to the console (ncfm.progress)."""
    from types import SimpleNamespace

    from ncfm.config import make_config
    from ncfm.runs import fold_of, new_state
    from ncfm.train import ClassifierCheckpoint, resolve_train_config

    cfg = resolve_train_config(make_config(None, weights="none", image_size=75, checkpoint_seconds=1e9, **settings))
    callback = ClassifierCheckpoint(fold_of(tmp_path, 0), new_state() if state is None else state, [], cfg,
                                    classes=CLASSES)
    model = SimpleNamespace(stop_training=False, weights=[])
    callback.set_model(model)
    callback.on_train_begin()
    callback.lr = 1e-3
    return callback, model


def run_epochs(callback, model, val_losses, first: int = 0) -> dict:
    """Epochs first+1, first+2, ... ending with these val_losses, each in its phase (the head
    epochs first), until one stops training; returns the fold's state."""
    for epoch, val_loss in enumerate(val_losses, start=first):
        callback.phase = 1 if epoch < callback.cfg.head_epochs else 2
        callback.started = time.time()
        callback.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
        if model.stop_training:
            break
    return callback.state


# The fold, from scratch: the head epoch on a frozen random backbone predicts about
# uniformly (val_loss ln 8), and the unfrozen model, its accuracy climbing, took longer than
# `patience` epochs to beat that. The old rule stopped it after epoch 7 and kept the head epoch.
HEAD_BEST_THEN_SLOWER = [2.0794, 2.31, 2.24, 2.19, 2.26, 2.15, 2.12, 2.20, 2.09, 2.11]


def test_a_phase_2_that_has_not_yet_beaten_the_head_epochs_is_not_stopped_early(tmp_path):
    from ncfm.train import _why_it_ended

    callback, model = scripted_checkpoint(tmp_path, epochs=10, head_epochs=1, patience=6)
    state = run_epochs(callback, model, HEAD_BEST_THEN_SLOWER)
    assert not model.stop_training and state["epoch"] == 10
    assert (state["best_epoch"], state["wait"]) == (1, 0) and not state.get("stopped_early")
    assert _why_it_ended(callback.cfg, state) == (  # what state.json's stop_reason says once it is done
        "ran to its last epoch (10); phase 2 never improved on the head's best val_loss (epoch 1), so early "
        "stopping never counted and best.keras is that head epoch")


def test_after_phase_2_beats_the_head_epochs_patience_epochs_without_a_new_best_stop_it(tmp_path, capsys):
    from ncfm.train import _why_it_ended

    callback, model = scripted_checkpoint(tmp_path, epochs=15, head_epochs=1, patience=6)
    # epoch 3 is phase 2's first best; 4-9 are not better
    state = run_epochs(callback, model, [2.0794, 2.31, 1.95, 2.0, 2.1, 1.96, 2.2, 2.05, 1.99, 1.80, 1.85])
    assert model.stop_training and state["stopped_early"]
    assert (state["epoch"], state["best_epoch"], state["wait"]) == (9, 3, 6)
    reason = "early stopping after epoch 9: val_loss has not improved on epoch 3's for 6 epochs (--patience)"
    assert state["stop_reason"] == reason and reason in capsys.readouterr().out
    assert _why_it_ended(callback.cfg, state) == reason


def test_a_fold_resumed_after_any_epoch_stops_where_an_uninterrupted_one_does(tmp_path):
    """Early stopping reads only the fold's state, which last.keras' record carries."""
    val_losses = [*HEAD_BEST_THEN_SLOWER[:7], 1.98, 2.05, 2.1, 2.0, 2.2, 2.3, 2.01, 2.4, 1.5]
    settings = dict(epochs=len(val_losses), head_epochs=1, patience=6)
    whole = run_epochs(*scripted_checkpoint(tmp_path, **settings), val_losses)
    assert (whole["epoch"], whole["best_epoch"], whole["stopped_early"]) == (14, 8, True)
    for killed_after in range(1, 14):
        callback, model = scripted_checkpoint(tmp_path, **settings)
        record = json.loads(json.dumps(run_epochs(callback, model, val_losses[:killed_after])))
        callback, model = scripted_checkpoint(tmp_path, state=record, **settings)
        assert run_epochs(callback, model, val_losses[killed_after:], first=killed_after) == whole, killed_after


def test_epochs_replayed_before_an_adopted_best_do_not_count_towards_early_stopping(tmp_path):
    """Resumed from last.keras at epoch 3 with best.keras (epoch 10) adopted: epochs 4-10 are
    replayed, cannot beat epoch 10, and must not stop the fold before it gets past epoch 10."""
    state = dict(epoch=3, phase=2, best_epoch=10, best_val_loss=0.5, wait=0, finished=False)
    callback, model = scripted_checkpoint(tmp_path, state, patience=3, head_epochs=3)
    run_epochs(callback, model, [0.9] * 16, first=3)  # epochs 4.., never better than epoch 10's 0.5
    assert (state["epoch"], state["wait"]) == (13, 3)  # patience counted from epoch 11


def test_a_second_train_on_a_fold_being_trained_stops_at_once(trained_run, tmp_path, capsys):
    fcntl = pytest.importorskip("fcntl")
    run = tmp_path / "run"
    fold_dir = copy_fold(trained_run["run"] / "fold0", run / "fold0")
    before = snapshot(fold_dir)
    run.joinpath(".fold0.lock").write_text("pid 4242 since 2026-11-23 03:00:00\n")
    with open(run / ".fold0.lock", "a+") as held:  # as the first `ncfm train` holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(train_args(trained_run["data"], run, *TINY_TRAIN, "--retrain")) == 2
    err = capsys.readouterr().err
    assert f"{fold_dir}: already being trained (pid 4242 since 2026-11-23 03:00:00)" in err
    assert snapshot(fold_dir) == before
    assert main(train_args(trained_run["data"], run, *TINY_TRAIN)) == 0  # released: runs (skips, finished)


def test_retrain_that_fails_before_its_first_checkpoint_puts_the_old_fold_back(trained_run, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(trained_run["data"], data, ignore=shutil.ignore_patterns("cache"))
    manifest = pd.read_csv(data / "folds.csv")
    broken = manifest.iloc[[0]].assign(image="train/ALB/img_broken.jpg")
    (data / "train/ALB/img_broken.jpg").write_bytes(b"")  # found only when the cache decodes it
    pd.concat([manifest, broken]).to_csv(data / "folds.csv", index=False)
    run = tmp_path / "run"
    fold_dir = copy_fold(trained_run["run"] / "fold0", run / "fold0")
    before = snapshot(fold_dir)
    assert main(train_args(data, run, *TINY_TRAIN, "--retrain")) == 2
    assert "img_broken.jpg: empty file (0 bytes)" in capsys.readouterr().err
    assert snapshot(fold_dir) == before
    assert sorted(p.name for p in run.iterdir()) == [".fold0.lock", "fold0"]


# ----------------------------------------------------------------------------- config file
def test_a_config_file_sets_values_and_flags_override_them(trained_run, tmp_path, monkeypatch):
    config = tmp_path / "small.toml"
    config.write_text('[train]\nweights = "none"\nimage_size = 75\nepochs = 7\nhead_lr = 0.005\n'
                      'dropout = 0.3\nhflip = false\nbatch_size = 8\n')

    class Reached(Exception):
        pass

    def stop(*a, **k):  # the resolved config is written before any image is decoded
        raise Reached

    monkeypatch.setattr("ncfm.cache.load_images", stop)
    with pytest.raises(Reached):
        main(train_args(trained_run["data"], tmp_path / "run", "--config", str(config),
                        "--epochs", "3", "--dropout", "0.2"))
    saved = json.loads((tmp_path / "run" / "fold0" / "config.json").read_text())
    assert (saved["epochs"], saved["dropout"]) == (3, 0.2)  # flags win
    assert (saved["head_lr"], saved["image_size"], saved["hflip"], saved["batch_size"]) == (0.005, 75, False, 8)
    assert saved["weights"] == "none" and saved["lr"] == 1e-3 and saved["optimizer"] == "adam"  # auto, resolved
    assert saved["rotation"] == 10.0  # untouched defaults are there too


def test_train_help_explains_every_setting_and_its_default(capsys):
    import dataclasses

    from ncfm.cli import main
    from ncfm.config import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"TrainConfig.{f.name} has no help sentence"
        explained = "".join(f"{f.metadata['help']} (default {f.default!r})".split())
        assert explained in text, f.name
    assert "cosine-decayedto1%ofit" in text  # a literal %, not argparse's formatting

# ----------------------------------------------------------------------------- from scratch
NO_AUGMENT = ["--hflip", "false", "--vflip", "false", "--rotation", "0", "--zoom", "0", "--shift", "0",
              "--shear", "0", "--brightness", "0", "--contrast", "0", "--dropout", "0"]


@pytest.mark.slow
def test_from_scratch_the_default_rates_learn_where_the_classic_fine_tuning_rate_does_not(trained_run, tmp_path):
    """--weights none with the optimizer and rates left to auto must fit its 16 training images;
    the control, SGD at the classic fine-tuning rate of 1e-4, is far from it after the same steps."""
    def last_training_loss(name, *extra):
        run = tmp_path / name
        args = train_args(trained_run["data"], run, *SMALL, *NO_AUGMENT, "--epochs", "12", "--head-epochs", "1",
                          "--patience", "0", *extra)
        assert main(args) == 0
        return pd.read_csv(run / "fold0" / "history.csv").loss.iloc[-1]

    auto = last_training_loss("auto")
    classic = last_training_loss("classic", "--optimizer", "sgd", "--lr", "1e-4")
    assert auto < 0.1  # measured 0.0008; the loss of predicting the class shares is about 1.9
    assert classic > 10 * auto  # measured 0.77


# ----------------------------------------------------------------------------- JAX
@pytest.mark.slow
def test_training_under_jax_writes_the_same_outputs(trained_run, tmp_path):
    """...and with the image cache on the device (--data-on-device) it trains exactly the same model."""
    run, on_device = tmp_path / "run", tmp_path / "on_device"
    settings = [*SMALL, "--epochs", "2", "--head-epochs", "1", "--cache-dir", str(tmp_path / "cache")]
    both = [train_args(trained_run["data"], run, *settings),
            train_args(trained_run["data"], on_device, *settings, "--data-on-device", "true")]
    code = f"import sys, ncfm.cli; sys.exit(max(ncfm.cli.main(args) for args in {both!r}))"
    done = subprocess.run([sys.executable, "-c", code], env=_env(KERAS_BACKEND="jax", NCFM_JAX_CACHE=str(tmp_path / "xla")),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("image cache on the device") == 1
    assert same_weights(weights_of(on_device / "fold0" / "last.keras"), weights_of(run / "fold0" / "last.keras"))
    pd.testing.assert_frame_equal(pd.read_csv(on_device / "fold0" / "oof.csv"), pd.read_csv(run / "fold0" / "oof.csv"))
    fold_dir = run / "fold0"
    config = json.loads((fold_dir / "config.json").read_text())
    assert config["backend"] == "jax" and config["jit_compile"] == "on"
    assert list(pd.read_csv(fold_dir / "history.csv").phase) == [1, 2]
    manifest = pd.read_csv(trained_run["data"] / "folds.csv")
    oof = pd.read_csv(fold_dir / "oof.csv")
    assert list(oof.image) == list(manifest.image[manifest.fold == 0])
    np.testing.assert_allclose(oof[list(CLASSES)].sum(axis=1), 1.0, atol=1e-6)
    assert json.loads((fold_dir / "state.json").read_text())["finished"]
    assert {"best.keras", "last.keras"} <= {f.name for f in fold_dir.iterdir()}


def test_a_reloaded_model_draws_the_same_augmentations_and_dropout_per_epoch(tmp_path):
    """SeedGenerator states are not saved in .keras files; train reseeds them per epoch."""
    from ncfm.augment import RandomAugment
    from ncfm.fold import reseed_random_layers

    inp = keras.Input((16, 16, 3), dtype="uint8")
    x = RandomAugment(seed=3, name="augment")(inp)
    out = keras.layers.Dropout(0.5, seed=3, name="dropout")(keras.layers.Flatten()(x))
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype("uint8")
    model(x, training=True)  # the saved model's streams have moved on...
    model.save(tmp_path / "last.keras")
    loaded = keras.saving.load_model(tmp_path / "last.keras")  # ...the loaded one's restart at 0
    for epoch in (0, 5):
        reseed_random_layers(model, epoch)
        reseed_random_layers(loaded, epoch)
        a = keras.ops.convert_to_numpy(model(x, training=True))
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(loaded(x, training=True)))
    reseed_random_layers(model, 6)
    assert not np.array_equal(a, keras.ops.convert_to_numpy(model(x, training=True)))  # epochs differ


def test_retrain_with_settings_that_cannot_run_keeps_the_trained_fold(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    fold_dir = copy_fold(trained_run["run"] / "fold0", run / "fold0")
    before = snapshot(fold_dir)
    args = train_args(trained_run["data"], run, *TINY_TRAIN, "--retrain", "--weights", str(tmp_path / "typo.h5"))
    assert main(args) == 2
    assert "file not found" in capsys.readouterr().err
    assert snapshot(fold_dir) == before


def test_a_fold_trains_with_random_erasing_and_records_it(tmp_path):
    from conftest import split_synthetic

    data = split_synthetic(tmp_path, n_train=48, boats=6)
    run = tmp_path / "runs" / "erasing"
    assert main(["train", "--data-dir", str(data), "--fold", "0", "--run", str(run), "--weights", "none",
                 "--image-size", "75", "--epochs", "1", "--head-epochs", "1", "--batch-size", "8",
                 "--tensorboard", "false", "--erasing", "0.5"]) == 0
    config = json.loads((run / "fold0" / "config.json").read_text())
    assert config["erasing"] == 0.5
    state = json.loads((run / "fold0" / "state.json").read_text())
    assert state["finished"] and np.isfinite(state["oof_log_loss"])


# ----------------------------------------------------------------------------- MixUp / CutMix
def _batch(n=8, size=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = np.eye(classes, dtype="float32")[rng.integers(0, classes, n)]
    return x, y


@pytest.mark.parametrize("how", ["mixup", "cutmix", "both"])
def test_mixed_targets_sum_to_one_and_images_stay_uint8(how):
    from ncfm.batches import mix_batch

    x, y = _batch()
    for seed in range(20):
        mx, my = mix_batch(x, y, how, np.random.default_rng(seed))
        assert mx.dtype == np.uint8 and mx.shape == x.shape
        np.testing.assert_allclose(my.sum(axis=1), 1.0, rtol=1e-6)
        assert (my >= 0).all() and ((my > 0).sum(axis=1) <= 2).all()  # at most the two images' classes


def test_cutmix_weighs_the_targets_by_the_pasted_area():
    from ncfm.batches import mix_batch

    x, y = _batch(n=2, size=20)
    x[0], x[1] = 0, 255  # two flat images: the pasted box is where image 0 turned 255
    y = np.eye(2, dtype="float32")
    rng = np.random.default_rng(4)
    for _ in range(10):
        mx, my = mix_batch(x, y, "cutmix", rng)
        pasted = (mx[0, :, :, 0] != 0).mean()
        if pasted:  # the permutation paired image 0 with image 1
            assert my[0, 1] == pytest.approx(pasted) and my[0, 0] == pytest.approx(1 - pasted)


def test_mixing_is_fixed_by_seed_epoch_and_step_so_a_resumed_epoch_mixes_the_same():
    from ncfm.batches import make_batches

    x, y = _batch(n=32)
    rows = np.arange(32)
    first = make_batches(x, rows, y, batch_size=8, train=True, seed=3, mix="both", workers=1)
    resumed = make_batches(x, rows, y, batch_size=8, train=True, seed=3, start_epoch=1, mix="both", workers=1)
    for step in range(4):
        a, b = first[4 + step], resumed[step]  # epoch 1, step `step`, reached both ways
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    plain = make_batches(x, rows, y, batch_size=8, train=True, seed=3, workers=1)
    assert not np.array_equal(plain[0][1], first[0][1])  # mixed targets are soft
    with pytest.raises(ValueError, match="mix must be one of"):
        make_batches(x, rows, y, batch_size=8, train=True, mix="blend")


def test_the_loss_on_mixed_targets_is_the_soft_cross_entropy():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype="float32")
    soft = np.array([[0.6, 0.4, 0.0], [0.0, 0.25, 0.75]], dtype="float32")
    loss = keras.ops.convert_to_numpy(keras.losses.CategoricalCrossentropy()(soft, probs))
    assert loss == pytest.approx(float(np.mean(-(soft * np.log(probs)).sum(axis=1))), rel=1e-5)


def test_a_fold_trains_with_cutmix_and_refuses_it_with_the_cache_on_the_device(tmp_path, capsys):
    from conftest import split_synthetic

    data = split_synthetic(tmp_path, n_train=48, boats=6)
    run = tmp_path / "runs" / "mix"
    tiny = ["--weights", "none", "--image-size", "75", "--epochs", "1", "--head-epochs", "1", "--batch-size", "8",
            "--tensorboard", "false"]
    assert main(["train", "--data-dir", str(data), "--fold", "0", "--run", str(run), *tiny, "--mix", "cutmix"]) == 0
    assert json.loads((run / "fold0" / "config.json").read_text())["mix"] == "cutmix"
    assert np.isfinite(json.loads((run / "fold0" / "state.json").read_text())["oof_log_loss"])
    capsys.readouterr()
    assert main(["train", "--data-dir", str(data), "--fold", "1", "--run", str(run), *tiny, "--mix", "mixup",
                 "--data-on-device", "true"]) == 2
    assert "--mix mixup mixes batches on the host; leave out --data-on-device" in capsys.readouterr().err


# ----------------------------------------------------------------------------- EMA, the recipe
class _Recorder(FoldCheckpoint):
    """FoldCheckpoint with what it validated and what it saved as best.keras, for the EMA test."""

    def __init__(self, fold, cfg):
        super().__init__(fold, {"epoch": 0, "best_val_loss": np.inf, "best_epoch": 0, "wait": 0}, [], cfg)
        self.saved = []

    def history_row(self, epoch, logs, seconds):
        return dict(epoch=epoch + 1, loss=logs["loss"], val_loss=logs["val_loss"])

    def progress_line(self, row):
        return f"epoch {row['epoch']}"

    def save_best(self, record):
        self.saved.append(self.model.get_weights())


def test_with_ema_the_averaged_weights_are_validated_and_saved_and_training_goes_on_from_the_trained_ones(tmp_path):
    from ncfm.config import TrainConfig

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5), loss="mse")
    recorder = _Recorder(ncfm.runs.fold_of(tmp_path / "run", 0), TrainConfig(checkpoint_seconds=0, patience=0))
    recorder.fold.dir.mkdir(parents=True)
    seen = []

    class Spy(keras.callbacks.Callback):  # runs after the recorder in each epoch
        def on_test_begin(self, logs=None):
            seen.append(("validated", model.get_weights()))

        def on_epoch_end(self, epoch, logs=None):
            average = [keras.ops.convert_to_numpy(v) for v in model.optimizer._model_variables_moving_average]
            seen.append(("trained", model.get_weights(), average, logs["val_loss"]))

    model.fit(x, y, batch_size=16, epochs=3, validation_data=(x, y), callbacks=[recorder, Spy()], verbose=0,
              shuffle=False)
    for (_, validated), (_, trained, average, val_loss) in zip(seen[0::2], seen[1::2]):
        assert same_weights(validated, average) and not same_weights(validated, trained)
        assert float(np.mean((x @ validated[0] + validated[1] - y) ** 2)) == pytest.approx(val_loss, rel=1e-5)
    best_epoch = recorder.state["best_epoch"]
    assert same_weights(recorder.saved[-1], seen[2 * best_epoch - 2][1])  # best.keras: that epoch's average
    # fit ends on the averaged weights, and last.keras holds them (the next phase starts from them)
    assert same_weights(model.get_weights(), seen[-1][2])
    assert same_weights(weights_of(tmp_path / "run" / "fold0" / "last.keras"), seen[-1][2])


def test_every_modern_option_trains_a_fold_on_tensorflow_and_jax(tmp_path):
    """Every addition at once (EMA, layer-wise decay on AdamW, TrivialAugment, MixUp/CutMix, random
    erasing, precise BatchNorm) under `--recipe modern`, on a tiny fold under each backend."""
    from conftest import split_synthetic

    data = split_synthetic(tmp_path, n_train=48, boats=6)
    # no head epoch: best.keras is a phase-2 epoch, whose BatchNorm trains (precise BN recomputes it)
    tiny = ["--weights", "none", "--image-size", "75", "--epochs", "2", "--head-epochs", "0", "--batch-size", "8",
            "--tensorboard", "false", "--recipe", "modern", "--lr-decay", "0.7", "--randaugment", "trivial",
            "--mix", "both", "--erasing", "0.25", "--precise-bn", "16"]
    tf_run, jax_run = tmp_path / "runs" / "tf", tmp_path / "runs" / "jax"
    assert main(["train", "--data-dir", str(data), "--fold", "0", "--run", str(tf_run), *tiny, "--ema", "0.9"]) == 0
    args = ["train", "--data-dir", str(data), "--fold", "0", "--run", str(jax_run), *tiny, "--ema", "0.99"]
    done = subprocess.run([sys.executable, "-c", f"import sys, ncfm.cli; sys.exit(ncfm.cli.main({args!r}))"],
                          env=_env(KERAS_BACKEND="jax", NCFM_JAX_CACHE=str(tmp_path / "xla")),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for run, backend, ema in ((tf_run, "tensorflow", 0.9), (jax_run, "jax", 0.99)):
        config = json.loads((run / "fold0" / "config.json").read_text())
        assert config["backend"] == backend and config["recipe"] == "modern"
        assert (config["ema"], config["optimizer"], config["lr_decay"]) == (ema, "adamw", 0.7)
        assert (config["randaugment"], config["mix"], config["erasing"]) == ("trivial", "both", 0.25)
        state = json.loads((run / "fold0" / "state.json").read_text())
        assert state["finished"] and np.isfinite(state["oof_log_loss"])
        log = (run / "fold0" / "train.log").read_text()
        assert "x0.7 per backbone stage" in log and "recipe modern: " in log
        assert "BatchNorm layers' statistics recomputed from 16 training images; held-out loss" in log
        precise = state["precise_bn"]
        assert precise["images"] == 16 and precise["layers"] == 94  # InceptionV3's BatchNorm layers
        # OOF comes from the best.keras precise BN left: recomputed if kept, as trained if not
        chosen = precise["held_out_loss_after" if precise["kept"] else "held_out_loss_before"]
        assert state["oof_log_loss"] == pytest.approx(chosen, rel=1e-4)


def test_precise_bn_that_raises_the_held_out_loss_leaves_best_keras_as_trained(trained_run, tmp_path, monkeypatch):
    import ncfm.model

    def ruin(model, batches):  # statistics that fit no image: the held-out loss can only rise
        layers = [layer for layer in ncfm.model.nested_layers(model)
                  if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
        for layer in layers:
            layer.moving_variance.assign(keras.ops.full_like(layer.moving_variance, 1e-6))
        return len(layers)

    monkeypatch.setattr(ncfm.model, "recompute_bn_statistics", ruin)
    run = tmp_path / "run"
    assert main(train_args(trained_run["data"], run, *SMALL, "--epochs", "1", "--head-epochs", "0",
                           "--precise-bn", "16", "--cache-dir", str(tmp_path / "cache"))) == 0
    state = json.loads((run / "fold0" / "state.json").read_text())
    precise = state["precise_bn"]
    after = precise["held_out_loss_after"]  # None where the outputs were not finite
    assert not precise["kept"] and (after is None or after > precise["held_out_loss_before"])
    assert state["oof_log_loss"] == pytest.approx(precise["held_out_loss_before"], rel=1e-4)
    assert "higher, so best.keras keeps the statistics of training" in (run / "fold0" / "train.log").read_text()
    best = keras.saving.load_model(run / "fold0" / "best.keras")
    variances = [keras.ops.convert_to_numpy(layer.moving_variance) for layer in ncfm.model.nested_layers(best)
                 if isinstance(layer, keras.layers.BatchNormalization)]
    assert min(float(v.min()) for v in variances) > 1e-6  # none of the ruined statistics was saved


@pytest.mark.slow
def test_recipe_classic_reproduces_the_epoch_lines_from_before_the_modern_options(tmp_path):
    """tests/classic_history.csv is this very fold's history.csv as ncfm wrote it before --recipe, --ema,
    --lr-decay and --randaugment existed (commit fd22245); classic must still train it to the digit."""
    from conftest import split_synthetic

    data = split_synthetic(tmp_path, n_train=48, boats=6)
    run = tmp_path / "run"
    assert main(["train", "--data-dir", str(data), "--fold", "0", "--run", str(run), "--weights", "none",
                 "--image-size", "75", "--epochs", "3", "--head-epochs", "1", "--batch-size", "8", "--tensorboard",
                 "false", "--deterministic", "true", "--mixed-precision", "off", "--recipe", "classic"]) == 0
    before = pd.read_csv(Path(__file__).parent / "classic_history.csv")
    now = pd.read_csv(run / "fold0" / "history.csv")[before.columns]
    pd.testing.assert_frame_equal(now, before, check_exact=False, atol=5e-5, rtol=0)
