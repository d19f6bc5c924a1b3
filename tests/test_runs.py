"""The run folder (ncfm.runs): every file it reads is checked. A truncated checkpoint, a damaged
config/state JSON or a broken OOF CSV stops train and predict with exit 2 and a message naming the
file and what to do, never a traceback, and nothing else in the run folder changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import TINY_TRAIN
from ncfm import NcfmError, runs
from ncfm.cli import main


def link_run(src: Path, dst: Path) -> Path:
    """A private copy of a trained run; checkpoints are hard links (never written into: every
    writer renames a new file over them, and these tests replace them the same way)."""
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".keras":
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return dst


def snapshot(run: Path) -> dict:
    """Every file of the run (the per-fold lock file aside: taking it is how a train starts)."""
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in run.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


def replace_file(path: Path, data: bytes) -> None:
    path.unlink()  # a new inode: the hard-linked original stays whole
    path.write_bytes(data)


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    return link_run(trained_run["run"], tmp_path / "run")


DAMAGE = {
    "truncated best.keras": ("fold1/best.keras", lambda p: p.read_bytes()[: len(p.read_bytes()) // 2]),
    "damaged config.json": ("fold1/config.json", lambda p: p.read_bytes()[:40]),
    "damaged state.json": ("fold1/state.json", lambda p: b"{\"epoch\": 2, "),
    "broken oof.csv": ("fold1/oof.csv", lambda p: p.read_bytes().replace(b"0.", b"x.", 5)),
}


@pytest.mark.parametrize("what", list(DAMAGE))
def test_predict_names_a_damaged_fold_file_and_changes_nothing(trained_run, run_copy, tmp_path, capsys, what):
    name, damage = DAMAGE[what]
    replace_file(run_copy / name, damage(run_copy / name))
    before = snapshot(run_copy)
    out = tmp_path / "sub.csv"
    code = main(["predict", "--data-dir", str(trained_run["data"]), "--run", str(run_copy), "--tta", "1",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{run_copy / name}:" in err and "--retrain" in err and "Traceback" not in err
    assert snapshot(run_copy) == before and not out.exists()


@pytest.mark.parametrize("what", ["damaged config.json", "damaged state.json"])
def test_train_names_a_damaged_fold_file_and_changes_nothing(trained_run, run_copy, capsys, what):
    name, damage = DAMAGE[what]
    replace_file(run_copy / name, damage(run_copy / name))
    before = snapshot(run_copy)
    code = main(["train", "--data-dir", str(trained_run["data"]), "--fold", "1", "--run", str(run_copy), *TINY_TRAIN])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{run_copy / name}: damaged" in err and "--retrain" in err and "Traceback" not in err
    assert snapshot(run_copy) == before


def test_resuming_from_a_truncated_last_checkpoint_says_to_retrain(trained_run, run_copy, capsys):
    (run_copy / "fold1" / "state.json").write_text('{"epoch": 1, "finished": false}')
    replace_file(run_copy / "fold1" / "last.keras", b"PK\x03\x04 half a zip")
    before = snapshot(run_copy)
    code = main(["train", "--data-dir", str(trained_run["data"]), "--fold", "1", "--run", str(run_copy), *TINY_TRAIN])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{run_copy / 'fold1' / 'last.keras'}: damaged" in err and "--retrain" in err
    assert snapshot(run_copy) == before


def test_the_progress_of_a_fold_is_the_record_inside_last_keras(trained_run, run_copy):
    fold = runs.fold_of(run_copy, 0)
    (run_copy / "fold0" / "state.json").write_text('{"epoch": 1, "finished": false, "best_epoch": 1}')
    state, history = runs.read_progress(fold)
    assert state["epoch"] == 2 and not state["finished"]  # state.json lagged the checkpoint
    assert [row["epoch"] for row in history] == [1, 2]
    (run_copy / "fold0" / "last.keras").unlink()
    assert runs.read_progress(fold) == (runs.new_state(), [])


def test_checkpoint_check_tells_a_whole_file_from_a_truncated_one(trained_run, tmp_path):
    best = trained_run["run"] / "fold0" / "best.keras"
    runs.check_checkpoint(best, "fix")
    (tmp_path / "cut.keras").write_bytes(best.read_bytes()[:-1000])
    with pytest.raises(NcfmError, match=r"cut.keras: truncated or not a Keras model file .*; fix"):
        runs.check_checkpoint(tmp_path / "cut.keras", "fix")
