"""Shared fixtures: a small synthetic NCFM dataset and tiny hand-made Kaggle layouts.

Other test files may add fixtures here; keep each one cheap or session-scoped. scripts/test.sh
runs the files on two pytest-xdist workers; a session fixture that trains (`trained_run`) is
built once for both (`built_once`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from ncfm.competition import NCFM_CLASSES as CLASSES

# Every test (and every ncfm it starts as a subprocess) sees a CPU without native bfloat16, so
# `--mixed-precision auto` is float32 and the suite's numbers are the same on every machine.
# tests/test_precision.py fakes other devices itself.
PLAIN_CPUINFO = Path(__file__).with_name("cpuinfo_plain.txt")
os.environ["NCFM_CPUINFO"] = str(PLAIN_CPUINFO)


def split_synthetic(root: Path, n_train: int, boats: int, folds: int = 2) -> Path:
    """A small synthetic dataset in root/data (scale 0.1, a few test images), split into `folds`
    group folds: for tests that train members or folds for seconds."""
    from ncfm.cli import main
    from ncfm.synthetic import make_synthetic

    data = root / "data"
    make_synthetic(data, n_train=n_train, n_test1=6, n_test2=6, boats=boats, scale=0.1, seed=5)
    assert main(["split_train_val", "--data-dir", str(data), "--folds", str(folds)]) == 0
    return data


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A 160-image synthetic dataset at scale 0.1 (128x72-class images), 12 boats. Read-only:
    tests that change files use `synthetic_copy`."""
    from ncfm.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("synthetic") / "data"
    make_synthetic(out, n_train=160, n_test1=20, n_test2=30, boats=12, scale=0.1, seed=0)
    return out


@pytest.fixture
def synthetic_copy(synthetic_data, tmp_path) -> Path:
    """A private, writable copy of `synthetic_data`."""
    dst = tmp_path / "data"
    shutil.copytree(synthetic_data, dst, ignore=shutil.ignore_patterns("cache", "folds.*"))
    return dst


def write_image(path: Path, size=(16, 9), colour=(120, 60, 30), fmt="JPEG") -> Path:
    """A tiny real image (JPEG unless fmt says otherwise) at path; folders created."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    x = np.clip(np.array(colour) + rng.integers(-20, 21, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(x).save(path, fmt)
    return path


@pytest.fixture
def kaggle_layout(tmp_path):
    """Factory: a minimal Kaggle layout with `per_class` tiny JPEGs in each train/<CLASS>/."""

    def make(per_class: int = 2, root: Path | None = None) -> Path:
        root = root or tmp_path / "data"
        for k, label in enumerate(CLASSES):
            for i in range(per_class):
                write_image(root / "train" / label / f"img_{k * 100 + i:05d}.jpg", colour=(30 * k, 100, 200 - 20 * k))
        return root

    return make


# ----------------------------------------------------------------------------- trained models
# Settings small enough for a 2-core CPU: a random InceptionV3 at its minimum size (75).
TINY_TRAIN = ["--weights", "none", "--image-size", "75", "--epochs", "2", "--head-epochs", "1",
              "--batch-size", "16", "--tensorboard", "false"]


# The order in which files are collected, and so handed to the two xdist workers: each takes the
# next whole file when it is done with its last (scripts/test.sh passes --no-loadscope-reorder, or
# xdist would order them by their number of tests). The longest go first, so that no worker is
# left with a long file at the end (seconds on the 2-core machine: train 700, members 315, detect
# 285, predict 190, demo 130, model 60); test_detect goes before test_members, which would wait
# for the `trained_run` that test_train builds.
FIRST = ("test_train.py", "test_detect.py", "test_members.py", "test_predict.py", "test_task.py", "test_demo.py",
         "test_competitions.py", "test_devices.py", "test_model.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that `build(folder)` fills once per test session, shared by every pytest-xdist
    worker: without it each worker would build its own, at the same time, on the same cores.
    A worker that finds it being built waits for it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's basetemp is a folder of the session's
        base = base.parent
    folder, built = base / name, base / f"{name}.built"
    with FileLock(str(base / f"{name}.lock")):
        if not built.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed in another worker
            folder.mkdir()
            build(folder)
            built.touch()
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> dict:
    """A 2-fold run trained once per test session on a 96-image synthetic dataset (both test
    stages, stage 2 nested as test_stg2/test_stg2/). Read-only: copy it before changing it.

    Returns {"data": data dir, "run": run dir, "folds": 2}.
    """
    def build(root: Path) -> None:
        from ncfm.cli import main
        from ncfm.synthetic import make_synthetic

        data = root / "data"
        make_synthetic(data, n_train=96, n_test1=12, n_test2=16, boats=8, scale=0.1, seed=3, nested_stg2=True)
        assert main(["split_train_val", "--data-dir", str(data), "--folds", "2"]) == 0
        for fold in (0, 1):
            assert main(["train", "--data-dir", str(data), "--fold", str(fold), "--run", str(root / "runs" / "tiny"),
                         *TINY_TRAIN]) == 0

    root = built_once(tmp_path_factory, "trained", build)
    return {"data": root / "data", "run": root / "runs" / "tiny", "folds": 2}


def kill_after_epoch(command: list[str], env: dict, state_path: Path, epoch: int = 2) -> dict:
    """Run a training command and SIGKILL it (no handler, no cleanup: as a lost machine) as soon as
    its state.json says `epoch` epochs are done; returns that state."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    try:
        while proc.poll() is None and time.time() < deadline:
            if state_path.is_file() and json.loads(state_path.read_text())["epoch"] >= epoch:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"finished or died before it could be killed: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return json.loads(state_path.read_text())
