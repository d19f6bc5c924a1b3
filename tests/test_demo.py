"""`ncfm demo`: the whole offline journey, synthetic data to a validated stage-2 submission."""

from __future__ import annotations

import re

import pytest

from ncfm import runs
from ncfm.cli import main as ncfm
from ncfm.competition import ncfm as ncfm_competition
from ncfm.submission import validate_file


@pytest.mark.slow
def test_demo_runs_end_to_end_to_a_validated_stage2_submission(tmp_path, capsys):
    root = tmp_path / "demo"
    argv = ["demo", "--dir", str(root), "--folds", "2", "--epochs", "2", "--n-train", "120",
            "--image-size", "75", "--tta", "2"]
    assert ncfm(argv) == 0
    said = capsys.readouterr().out

    # each step is shown as the command a user would type, in order
    steps = re.findall(r"^\$ ncfm (\w+)", said, flags=re.M)
    assert steps == ["make_synthetic", "split_train_val", "train", "predict", "validate"]  # one train, every fold

    submission = root / "submissions" / "demo_stage2.csv"
    checked = validate_file(submission, ncfm_competition(), stage=2, data_dir=root / "data")
    assert checked.rows > 0
    run = root / "runs" / "demo"
    assert list(runs.read_members_table(run).fold) == [0, 1]  # every fold from one `train --folds all`
    calibration = runs.read_calibration(run)
    # the default weak-fold rule keeps every fold, each shrunk towards the priors by a weight of its own
    assert calibration["weak_folds"] == "shrink" and calibration["left_out"] == []
    assert set(calibration["shrink"]) == {str(run / "fold0"), str(run / "fold1")}
    for k in (0, 1):  # every fold ensembled wrote its own predictions first
        assert (run / "predictions" / f"stage2_fold{k}_tta2.csv").is_file()

    loss = re.search(r"cross-validated OOF log loss: (\d+\.\d+), (?:after calibration (\d+\.\d+)|calibration "
                     r"not applied \(no gain on held-out folds\))\s+"
                     r"\(guessing uniformly: 2\.0794; always the class shares: (\d+\.\d+)\)", said)
    assert loss, said[-2000:]
    before, after, priors = (float(v) if v else None for v in loss.groups())
    assert 0.0 < (after or before) <= before + 1e-9
    assert 1.0 < priors < 2.0794  # the synthetic classes are imbalanced like NCFM's
    # next steps: the real-data commands, in order (a fold's warning may name `ncfm train` earlier)
    steps = said[said.index("With a real competition's files"):]
    assert steps.index("ncfm split_train_val --data-dir data") < steps.index("ncfm train --folds all") \
        < steps.index("ncfm predict --run") < steps.index("ncfm submit")


def test_demo_refuses_a_non_empty_dir_without_force(tmp_path, capsys):
    root = tmp_path / "work"
    root.mkdir()
    (root / "notes.txt").write_text("mine\n")
    assert ncfm(["demo", "--dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert str(root) in err and "not empty" in err and "--force" in err
    assert (root / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt"]
