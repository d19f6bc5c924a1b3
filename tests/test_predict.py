"""`ncfm predict`: folds x views x runs -> per-fold files -> calibrated, validated Kaggle CSV.

Every test starts from the session's `trained_run` (a 2-fold run on a synthetic dataset whose
stage-2 images sit in a nested test_stg2/test_stg2/). Predicting writes into the run folder, so
tests work on copies. Models are loaded only where the behaviour needs it: `predicted` runs the
models once per module and the option tests reuse its per-fold files.

The session's folds trained for two epochs from scratch, and whether either beats the class
priors is chance. The tests of ensembling keep every fold (--weak-folds keep); those of the other
rules decide which folds are no better than the priors.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_TRAIN
from ncfm.competition import NCFM_CLASSES as CLASSES
from ncfm.calibrate import calibrate, kaggle_log_loss
from ncfm.cli import main as ncfm
from ncfm.competition import ncfm as ncfm_competition
from ncfm.submission import read_sample, validate_file

NCFM = ncfm_competition()

TTA = 2


def _link_or_copy(src, dst):
    """Models are read, never written, by predict: a hard link is a copy that costs nothing."""
    if src.endswith(".keras"):
        try:
            return os.link(src, dst)
        except OSError:
            pass
    return shutil.copy2(src, dst)


def copy_run(run: Path, dst: Path) -> Path:
    """A private copy of a run folder, without the resume checkpoints predict never reads."""
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("last.keras"), copy_function=_link_or_copy)
    return dst


def predict(data: Path, run: Path | list[Path], out: Path, *flags: str, stage: int = 2, tta: int = TTA,
            weak: str = "keep") -> int:
    runs = [run] if isinstance(run, Path) else run
    argv = ["predict", "--data-dir", str(data), "--stage", str(stage), "--tta", str(tta), "--out", str(out),
            "--weak-folds", weak]
    for r in runs:
        argv += ["--run", str(r)]
    return ncfm(argv + list(flags))


def probs_of(csv: Path) -> pd.DataFrame:
    return pd.read_csv(csv, dtype={"image": str}).set_index("image")[list(CLASSES)]


@pytest.fixture(scope="module")
def predicted(trained_run, tmp_path_factory) -> dict:
    """A copy of the trained run after one stage-2 and one stage-1 predict (TTA 2): its
    predictions/ and fold<K>/oof_tta2.csv exist, so later predicts need no model."""
    root = tmp_path_factory.mktemp("predicted")
    run = copy_run(trained_run["run"], root / "runs" / "tiny")
    out = {"data": trained_run["data"], "run": run, "root": root}
    for stage in (2, 1):
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            assert predict(trained_run["data"], run, root / f"stage{stage}.csv", stage=stage) == 0
        out[f"stage{stage}"] = root / f"stage{stage}.csv"
        out[f"log{stage}"] = log.getvalue()
    return out


@pytest.fixture
def run_copy(predicted, tmp_path) -> Path:
    """A private copy of the predicted run (fold prediction files included)."""
    return copy_run(predicted["run"], tmp_path / "runs" / "tiny")


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if anything loads a Keras model."""
    import keras

    def refuse(*args, **kwargs):
        raise AssertionError(f"a model was loaded: {args[0] if args else kwargs}")

    monkeypatch.setattr(keras.saving, "load_model", refuse)


def fold_files(run: Path, stage: int = 2, tta: int = TTA) -> list[Path]:
    return [run / "predictions" / f"stage{stage}_fold{k}_tta{tta}.csv" for k in (0, 1)]


# ----------------------------------------------------------------------------- the submission
def test_stage2_submission_holds_exactly_the_sample_ids_with_their_test_stg2_prefix(predicted):
    data = predicted["data"]
    assert (data / "test_stg2" / "test_stg2").is_dir()  # the nested folder the 7z unpacks to
    checked = validate_file(predicted["stage2"], NCFM, stage=2, data_dir=data)
    sample_ids = read_sample(NCFM.sample_path(data, 2))["image"].tolist()
    written = pd.read_csv(predicted["stage2"], dtype={"image": str})
    assert checked.rows == len(sample_ids) == 12 + 16
    assert list(written.columns) == ["image", *CLASSES]
    assert sorted(written.image) == sorted(sample_ids)
    assert sum(i.startswith("test_stg2/image_") for i in written.image) == 16


def test_stage1_submission_passes_validation(predicted):
    checked = validate_file(predicted["stage1"], NCFM, stage=1, data_dir=predicted["data"])
    assert checked.rows == 12


def test_every_fold_writes_its_predictions_before_averaging(predicted):
    run = predicted["run"]
    for path in fold_files(run, 2) + fold_files(run, 1):
        assert path.is_file(), path
    for k in (0, 1):
        oof = pd.read_csv(run / f"fold{k}" / f"oof_tta{TTA}.csv")
        assert list(oof.columns) == ["image", "label", *CLASSES]
        np.testing.assert_allclose(oof[list(CLASSES)].sum(axis=1), 1.0, atol=1e-6)


def test_submission_is_the_calibrated_mean_of_the_fold_files(predicted):
    # predicted["run"]'s calibration.json is the last predict's: stage 1
    calibration = json.loads((predicted["run"] / "calibration.json").read_text())
    assert calibration["method"] == "temperature" and calibration["stage"] == 1
    folds = [probs_of(p) for p in fold_files(predicted["run"], 1)]
    expected = calibrate(np.mean([f.to_numpy() for f in folds], axis=0), calibration["temperature"])
    written = probs_of(predicted["stage1"]).loc[folds[0].index]
    np.testing.assert_allclose(written.to_numpy(), expected, atol=1e-8)


def test_a_second_predict_reuses_the_fold_files_without_loading_a_model(predicted, run_copy, tmp_path,
                                                                        no_model_loading, capsys):
    before = {p: p.stat().st_mtime_ns for p in fold_files(run_copy)}
    assert predict(predicted["data"], run_copy, tmp_path / "again.csv") == 0
    assert "reusing" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in fold_files(run_copy)} == before
    pd.testing.assert_frame_equal(probs_of(tmp_path / "again.csv"), probs_of(predicted["stage2"]))


def test_fold_files_of_a_retrained_fold_or_other_views_are_recomputed(predicted, run_copy, tmp_path, monkeypatch):
    import keras

    loaded = []
    real_load = keras.saving.load_model
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: loaded.append(str(a[0])) or real_load(*a, **k))
    best = run_copy / "fold1" / "best.keras"
    shutil.copy(best, tmp_path / "best.keras")  # a new file, as train --retrain writes
    os.replace(tmp_path / "best.keras", best)
    assert predict(predicted["data"], run_copy, tmp_path / "retrained.csv") == 0
    assert loaded == [str(best)]  # fold 0's files were still current
    loaded.clear()
    assert predict(predicted["data"], run_copy, tmp_path / "views.csv", "--views", "zoom") == 0  # view 1: a zoom, not the flip
    assert len(loaded) == 2


def test_fold_files_are_recomputed_when_a_test_image_is_replaced(predicted, run_copy, tmp_path, monkeypatch):
    import keras
    from PIL import Image

    data = tmp_path / "data"
    shutil.copytree(predicted["data"], data)  # dates kept: the saved fold files still apply
    loaded = []
    real_load = keras.saving.load_model
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: loaded.append(a[0]) or real_load(*a, **k))
    assert predict(data, run_copy, tmp_path / "same.csv") == 0
    assert loaded == []
    replaced = sorted((data / "test_stg1").glob("*.jpg"))[0]
    Image.open(replaced).transpose(Image.Transpose.ROTATE_180).save(replaced)  # same name, new picture
    assert predict(data, run_copy, tmp_path / "replaced.csv") == 0
    assert len(loaded) == 2
    assert not np.allclose(probs_of(tmp_path / "replaced.csv").loc[replaced.name],
                           probs_of(tmp_path / "same.csv").loc[replaced.name])


def test_recompute_predicts_again_with_up_to_date_fold_files(predicted, run_copy, tmp_path, monkeypatch):
    import keras

    loaded = []
    real_load = keras.saving.load_model
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: loaded.append(a[0]) or real_load(*a, **k))
    files = fold_files(run_copy)
    for p in files:  # date the old files so a rewrite shows
        os.utime(p, ns=(0, 0))
    assert predict(predicted["data"], run_copy, tmp_path / "forced.csv", "--recompute") == 0
    assert len(loaded) == 2
    assert all(p.stat().st_mtime_ns > 0 for p in files)
    np.testing.assert_allclose(probs_of(tmp_path / "forced.csv"), probs_of(predicted["stage2"]), atol=1e-5)


# ----------------------------------------------------------------------------- test-time views
@pytest.fixture(scope="module")
def fold0_model_and_images(trained_run):
    import keras

    from ncfm import model as _registers_layers  # noqa: F401
    from ncfm.cache import decode_resized

    model = keras.saving.load_model(trained_run["run"] / "fold0" / "best.keras", compile=False)
    paths = sorted((trained_run["data"] / "test_stg1").glob("*.jpg"))[:6]
    images = np.stack([decode_resized(p, 75) for p in paths])
    assert images.dtype == np.uint8
    return model, images


def test_view_0_of_tta_is_the_plain_prediction(fold0_model_and_images):
    from ncfm.augment import tta_parameters
    from ncfm.model import build_tta_model

    model, images = fold0_model_and_images
    per_view = build_tta_model(model, tta_parameters(4)).predict(images, verbose=0)
    plain = model.predict(images, verbose=0)
    assert per_view.shape == (len(images), 4, len(CLASSES))
    np.testing.assert_allclose(per_view[:, 0], plain, atol=1e-5)


def test_tta_views_are_different_images_and_give_different_predictions(fold0_model_and_images):
    from ncfm.augment import TTAViews, tta_parameters
    from ncfm.model import build_tta_model

    model, images = fold0_model_and_images
    views = tta_parameters(6, ("flips", "zoom", "shift", "crop"))
    pixels = np.asarray(TTAViews(views)(images[:2])).reshape(2, 6, 75, 75, 3)
    per_view = build_tta_model(model, views).predict(images, verbose=0)
    for a in range(6):
        for b in range(a + 1, 6):
            assert np.abs(pixels[:, a] - pixels[:, b]).mean() > 1.0, (a, b)
            assert np.abs(per_view[:, a] - per_view[:, b]).max() > 1e-6, (a, b)


# ----------------------------------------------------------------------------- refusals
def test_an_existing_out_file_is_not_overwritten_without_force(predicted, run_copy, tmp_path, capsys):
    out = tmp_path / "mine.csv"
    out.write_text("keep me\n")
    assert predict(predicted["data"], run_copy, out) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "already exists" in err and "--force" in err
    assert out.read_text() == "keep me\n"


def copy_data_with_a_bad_image(data: Path, dst: Path) -> tuple[Path, str]:
    """A copy of the data whose first stage-1 test image is garbage bytes (same name). The
    image cache is copied too: its key sees the new size and mtime."""
    shutil.copytree(data, dst)
    bad = sorted((dst / "test_stg1").glob("*.jpg"))[0]
    bad.write_bytes(b"this is not a jpeg" * 10)
    return dst, bad.name


def test_an_unreadable_test_image_is_an_error_naming_it(trained_run, tmp_path, capsys):
    data, bad = copy_data_with_a_bad_image(trained_run["data"], tmp_path / "data")
    run = copy_run(trained_run["run"], tmp_path / "runs" / "tiny")
    out = tmp_path / "sub.csv"
    assert predict(data, run, out, stage=1, tta=1) == 2
    err = capsys.readouterr().err
    assert str(data / "test_stg1" / bad) in err and "--fill-unreadable" in err
    assert not out.exists()


@pytest.fixture(scope="module")
def filled(trained_run, tmp_path_factory) -> dict:
    """One stage-1 predict with --fill-unreadable on data with one garbage test image."""
    root = tmp_path_factory.mktemp("filled")
    data, bad = copy_data_with_a_bad_image(trained_run["data"], root / "data")
    run = copy_run(trained_run["run"], root / "runs" / "tiny")
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        assert predict(data, run, root / "filled.csv", "--fill-unreadable", stage=1, tta=1) == 0
    return {"data": data, "bad": bad, "run": run, "out": root / "filled.csv", "log": log.getvalue()}


def test_fill_unreadable_gives_the_image_the_class_priors_and_lists_it(filled):
    assert f"1 unreadable test image(s) given the class priors: {filled['bad']}\n" in filled["log"]
    validate_file(filled["out"], NCFM, stage=1, data_dir=filled["data"])  # no row dropped
    labels = pd.read_csv(filled["data"] / "folds.csv").label.value_counts().reindex(list(CLASSES), fill_value=0)
    priors = (labels + 1) / (labels + 1).sum()  # the folds' OOF rows cover the whole training set
    np.testing.assert_allclose(probs_of(filled["out"]).loc[filled["bad"]].to_numpy(), priors.to_numpy(), atol=1e-8)


def test_an_image_filled_once_is_still_unreadable_when_the_fold_files_are_reused(filled, tmp_path, capsys,
                                                                                no_model_loading):
    run = copy_run(filled["run"], tmp_path / "runs" / "tiny")
    assert predict(filled["data"], run, tmp_path / "again.csv", stage=1, tta=1) == 2
    err = capsys.readouterr().err
    assert filled["bad"] in err and "stage1_fold0_tta1.csv" in err and "--recompute" in err
    assert predict(filled["data"], run, tmp_path / "filled.csv", "--fill-unreadable", stage=1, tta=1) == 0
    assert f"1 unreadable test image(s) given the class priors: {filled['bad']}\n" in capsys.readouterr().out
    pd.testing.assert_frame_equal(probs_of(tmp_path / "filled.csv"), probs_of(filled["out"]))


# ----------------------------------------------------------------------------- options
def test_without_a_sample_submission_ids_come_from_the_folders_and_the_user_is_told(predicted, run_copy,
                                                                                   tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(predicted["data"], data, ignore=shutil.ignore_patterns("sample_submission_stg2.csv"))
    out = tmp_path / "sub.csv"
    assert predict(data, run_copy, out) == 0
    said = capsys.readouterr().out
    assert "no sample_submission_stg2.csv" in said and "folder listing" in said
    assert "its form checked, but not its ids" in said and ", validated)" not in said
    expected = read_sample(NCFM.sample_path(predicted["data"], 2))["image"].tolist()
    assert sorted(pd.read_csv(out, dtype={"image": str}).image) == sorted(expected)


def test_without_a_sample_submission_an_empty_test_folder_is_an_error(predicted, run_copy, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(predicted["data"], data, ignore=shutil.ignore_patterns("sample_submission_stg2.csv", "*.jpg"))
    assert predict(data, run_copy, tmp_path / "sub.csv") == 2
    err = capsys.readouterr().err
    assert "test_stg1: no images" in err and "sample_submission_stg2.csv" in err
    assert not (tmp_path / "sub.csv").exists()


def test_unfinished_folds_are_refused_unless_allowed_and_other_folders_are_not_folds(predicted, run_copy, tmp_path,
                                                                                     capsys, no_model_loading):
    shutil.copytree(run_copy / "fold0", run_copy / "fold0.bak", copy_function=_link_or_copy)  # a user's backup
    state = run_copy / "fold1" / "state.json"
    state.write_text(json.dumps(json.loads(state.read_text()) | {"finished": False}))  # still training
    assert predict(predicted["data"], run_copy, tmp_path / "refused.csv") == 2
    err = capsys.readouterr().err
    assert "training not finished for fold1" in err and "--allow-unfinished" in err
    assert not (tmp_path / "refused.csv").exists()
    # allowed: folds 0 and 1 only (fold0.bak would need its model loaded, and change the mean)
    assert predict(predicted["data"], run_copy, tmp_path / "allowed.csv", "--allow-unfinished") == 0
    pd.testing.assert_frame_equal(probs_of(tmp_path / "allowed.csv"), probs_of(predicted["stage2"]))


def test_a_model_that_predicts_nan_is_named_and_its_rows_never_pass_for_unreadable_images(
        predicted, run_copy, tmp_path, capsys, monkeypatch):
    import keras

    from ncfm import predict as predict_module

    saved = fold_files(run_copy)[0]
    before = saved.read_bytes()
    monkeypatch.setattr(predict_module, "predict_views",
                        lambda model, images, rows, *a, **k: np.full((len(rows), len(CLASSES)), np.nan))
    assert predict(predicted["data"], run_copy, tmp_path / "nan.csv", "--recompute") == 2
    err = capsys.readouterr().err
    assert "fold0/best.keras: predicts NaN for" in err and "diverged" in err and "--retrain" in err
    assert saved.read_bytes() == before and not (tmp_path / "nan.csv").exists()
    monkeypatch.undo()

    # a saved file with blank rows its .json does not record as unreadable is predicted again
    df = pd.read_csv(saved, dtype={"image": str})
    df.loc[3, list(CLASSES)] = np.nan
    df.to_csv(saved, index=False)
    loaded = []
    real_load = keras.saving.load_model
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: loaded.append(str(a[0])) or real_load(*a, **k))
    assert predict(predicted["data"], run_copy, tmp_path / "again.csv") == 0
    assert loaded == [str(run_copy / "fold0" / "best.keras")]
    np.testing.assert_allclose(probs_of(tmp_path / "again.csv"), probs_of(predicted["stage2"]), atol=1e-5)


def test_geometric_mean_averages_the_folds_in_log_space(predicted, run_copy, tmp_path, no_model_loading):
    out = tmp_path / "geo.csv"
    assert predict(predicted["data"], run_copy, out, "--mean", "geometric", "--calibrate", "none") == 0
    folds = [probs_of(p) for p in fold_files(run_copy)]
    expected = np.exp(np.mean([np.log(f.to_numpy()) for f in folds], axis=0))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs_of(out).loc[folds[0].index].to_numpy(), expected, atol=1e-7)


@pytest.mark.parametrize("method", ["none", "temperature", "floor", "both"])
def test_calibration_methods_print_oof_log_loss_before_and_after(predicted, run_copy, tmp_path, capsys,
                                                                 no_model_loading, method):
    out = tmp_path / f"{method}.csv"
    assert predict(predicted["data"], run_copy, out, "--calibrate", method) == 0
    said = capsys.readouterr().out
    assert "OOF log loss, all folds:" in said
    calibration = json.loads((run_copy / "calibration.json").read_text())
    assert calibration["method"] == method
    if method == "none":
        assert calibration["temperature"] == 1.0 and calibration["floor"] == 0.0
    else:
        assert f"calibration ({method})" in said and "->" in said
        assert calibration["after"] <= calibration["before"] + 1e-9
    if method == "temperature":
        assert calibration["floor"] == 0.0
    if method == "floor":
        assert calibration["temperature"] == 1.0
    validate_file(out, NCFM, stage=2, data_dir=predicted["data"])


def test_clip_puts_a_floor_under_every_probability_and_reports_its_oof_effect(predicted, run_copy, tmp_path,
                                                                              capsys, no_model_loading):
    out = tmp_path / "clipped.csv"
    assert predict(predicted["data"], run_copy, out, "--calibrate", "none", "--clip", "0.02") == 0
    said = capsys.readouterr().out
    assert "clip 0.02" in said and "->" in said
    p = probs_of(out).to_numpy()
    assert p.min() >= 0.02 / (1 + 8 * 0.02) - 1e-9  # floor then renormalise
    assert json.loads((run_copy / "calibration.json").read_text())["clip"] == 0.02


def test_several_runs_are_ensembled(predicted, run_copy, tmp_path, capsys, no_model_loading):
    twin = copy_run(run_copy, tmp_path / "runs" / "twin")
    out = tmp_path / "two.csv"
    assert predict(predicted["data"], [run_copy, twin], out, "--calibrate", "none") == 0
    said = capsys.readouterr().out
    assert "2 run(s)" in said and "OOF log loss, all folds and runs" in said
    assert said.count("reusing") == 4  # 2 runs x 2 folds
    single = tmp_path / "one.csv"
    assert predict(predicted["data"], run_copy, single, "--calibrate", "none") == 0
    np.testing.assert_allclose(probs_of(out), probs_of(single), atol=1e-9)  # twins average to themselves


# ----------------------------------------------------------------------------- folds that learned nothing
def uniform(y: np.ndarray) -> np.ndarray:
    """What a fold that learned nothing predicts, as the issue's did: 1/8 each (log loss ln 8 = 2.0794)."""
    return np.full((len(y), len(CLASSES)), 1 / len(CLASSES))


def learned(y: np.ndarray) -> np.ndarray:
    """What a fold that learned something predicts: 0.6 on the true class (log loss 0.51)."""
    probs = np.full((len(y), len(CLASSES)), 0.4 / (len(CLASSES) - 1))
    probs[np.arange(len(y)), y] = 0.6
    return probs


def judged_by_oof(run: Path, fold: int, predicts) -> None:
    """fold<k> as a fold trained before train recorded how it compares with the class priors (no
    prior_* in its state.json), its oof.csv holding `predicts(labels)`: predict judges it from
    oof.csv and the manifest it was trained on."""
    fold_dir = run / f"fold{fold}"
    oof = pd.read_csv(fold_dir / "oof.csv", dtype={"image": str, "label": str})
    oof[list(CLASSES)] = predicts(oof.label.map(CLASSES.index).to_numpy())
    oof.to_csv(fold_dir / "oof.csv", index=False)
    state = json.loads((fold_dir / "state.json").read_text())
    older = {k: v for k, v in state.items() if not k.startswith("prior_") and k != "no_better_than_priors"}
    (fold_dir / "state.json").write_text(json.dumps(older))


def prior_log_loss(data: Path, fold: int, max_train_images: int = 0) -> float:
    """Log loss on fold k's held-out images of the class shares of its training images (one more
    of each class counted, so that none is 0)."""
    manifest = pd.read_csv(data / "folds.csv", dtype={"label": str})
    trained_on = manifest[manifest.fold != fold]
    trained_on = trained_on.iloc[:max_train_images] if max_train_images else trained_on
    counts = trained_on.label.value_counts().reindex(list(CLASSES), fill_value=0) + 1
    shares = counts / counts.sum()
    return float(-np.mean(np.log(shares[manifest.label[manifest.fold == fold]].to_numpy())))


@pytest.fixture(scope="module")
def weak_member(trained_run, tmp_path_factory) -> dict:
    """A 2-fold run whose fold 0 learned nothing: retrained at a learning rate of 1e-12 for its one
    (head) epoch, so it predicts what its random head did. Fold 1 is the session's, as a fold that
    learned something (its OOF `learned`, judged from oof.csv)."""
    root = tmp_path_factory.mktemp("weak")
    run = copy_run(trained_run["run"], root / "runs" / "tiny")
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        assert ncfm(["train", "--data-dir", str(trained_run["data"]), "--fold", "0", "--run", str(run), "--retrain",
                     *TINY_TRAIN, "--epochs", "1", "--head-lr", "1e-12", "--cache-dir", str(root / "cache")]) == 0
    judged_by_oof(run, 1, learned)
    return {"data": trained_run["data"], "run": run, "root": root, "train_said": said.getvalue()}


def test_train_warns_about_a_fold_no_better_than_the_class_priors_and_records_it(weak_member):
    fold_dir = weak_member["run"] / "fold0"
    state = json.loads((fold_dir / "state.json").read_text())
    assert state["prior_log_loss"] == pytest.approx(prior_log_loss(weak_member["data"], 0), abs=1e-9)
    assert state["oof_log_loss"] >= state["prior_log_loss"]  # learned nothing
    assert state["no_better_than_priors"] is True
    assert state["stop_reason"] == "ran to its last epoch (1)"
    held_out = len(pd.read_csv(fold_dir / "oof.csv"))
    warning = (f"WARNING: fold 0 is no better than the class priors: OOF log loss {state['oof_log_loss']:.4f} "
               f"against {state['prior_log_loss']:.4f} for predicting its training class shares on the same "
               f"{held_out} images")
    for said in (weak_member["train_said"], (fold_dir / "train.log").read_text()):
        assert warning in said
        assert "pulls it towards the class priors by a weight fitted on its OOF (--weak-folds shrink" in said
        assert "--epochs" in said and "--lr" in said and "--weights" in said and "--retrain" in said


def test_predict_leaves_out_a_fold_no_better_than_the_class_priors_and_says_so(weak_member, tmp_path, capsys,
                                                                               monkeypatch):
    import keras

    data, run = weak_member["data"], weak_member["run"]
    state = json.loads((run / "fold0" / "state.json").read_text())
    loaded = []
    real_load = keras.saving.load_model
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: loaded.append(str(a[0])) or real_load(*a, **k))
    out = tmp_path / "sub.csv"
    assert predict(data, run, out, stage=1, tta=1, weak="priors") == 0
    said = capsys.readouterr().out
    assert (f"{run}: leaving out fold0 (OOF log loss {state['oof_log_loss']:.4f}, class priors "
            f"{state['prior_log_loss']:.4f}), no better than the class priors on held-out images (--weak-folds "
            f"priors); ensembling 1 of 2 folds (--weak-folds keep keeps every fold)") in said
    assert loaded == [str(run / "fold1" / "best.keras")]  # fold 0 is not even predicted
    assert f"{run} fold1: OOF log loss" in said and f"{run} fold0: OOF" not in said
    assert "OOF log loss, the folds kept: 0.5108" in said  # fold 1's `learned` OOF alone
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["left_out"] == [str(run / "fold0")]
    fold1 = probs_of(run / "predictions" / "stage1_fold1_tta1.csv")
    expected = calibrate(fold1.to_numpy(), calibration["temperature"], calibration["floor"])
    np.testing.assert_allclose(probs_of(out).loc[fold1.index].to_numpy(), expected, atol=1e-6)  # files hold 8 decimals
    validate_file(out, NCFM, stage=1, data_dir=data)

    kept = tmp_path / "kept.csv"
    assert predict(data, run, kept, stage=1, tta=1) == 0  # --weak-folds keep
    said = capsys.readouterr().out
    assert f"{run}: keeping fold0 (OOF log loss {state['oof_log_loss']:.4f}" in said and "(--weak-folds keep)\n" in said
    assert f"{run} fold0: OOF log loss" in said and "OOF log loss, all folds:" in said
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["left_out"] == []
    files = [run / "predictions" / f"stage1_fold{k}_tta1.csv" for k in (0, 1)]
    both = np.mean([probs_of(f).loc[fold1.index] for f in files], axis=0)
    expected = calibrate(both, calibration["temperature"], calibration["floor"])
    np.testing.assert_allclose(probs_of(kept).loc[fold1.index].to_numpy(), expected, atol=1e-6)


def test_when_every_fold_is_no_better_than_the_class_priors_predict_keeps_them_all_and_warns(
        predicted, run_copy, tmp_path, capsys, no_model_loading):
    for fold in (0, 1):
        judged_by_oof(run_copy, fold, uniform)
    out = tmp_path / "sub.csv"
    assert predict(predicted["data"], run_copy, out, weak="margin") == 0
    said = capsys.readouterr().out
    priors = [prior_log_loss(predicted["data"], k) for k in (0, 1)]
    assert (f"WARNING: {run_copy}: every fold is no better than predicting its training class shares: fold0 (OOF "
            f"log loss 2.0794, class priors {priors[0]:.4f}), fold1 (OOF log loss 2.0794, class priors "
            f"{priors[1]:.4f}). Keeping them all") in said
    assert json.loads((run_copy / "calibration.json").read_text())["left_out"] == []
    pd.testing.assert_frame_equal(probs_of(out), probs_of(predicted["stage2"]))


def training_shares(data: Path, fold: int) -> np.ndarray:
    manifest = pd.read_csv(data / "folds.csv", dtype={"label": str})
    counts = manifest.label[manifest.fold != fold].value_counts().reindex(list(CLASSES), fill_value=0) + 1
    return (counts / counts.sum()).to_numpy()


def test_a_fold_better_than_the_class_priors_only_by_chance_is_left_out(predicted, run_copy, tmp_path, capsys,
                                                                        no_model_loading):
    """Fold 1 predicts its training class shares, nudged towards the true class on every other image
    and away from it on the rest: a little better than the priors on average, by less than twice the
    standard error of the difference. Fold 0 learned something."""
    shares = training_shares(predicted["data"], 1)

    def level(y: np.ndarray) -> np.ndarray:
        probs = np.tile(shares, (len(y), 1))
        probs[np.arange(len(y)), y] *= np.where(np.arange(len(y)) % 2 == 0, 1.3, 0.8)
        return probs / probs.sum(axis=1, keepdims=True)

    judged_by_oof(run_copy, 0, learned)
    judged_by_oof(run_copy, 1, level)
    oof = pd.read_csv(run_copy / "fold1" / "oof.csv", dtype={"image": str, "label": str})
    value = kaggle_log_loss(oof.label.map(CLASSES.index), oof[list(CLASSES)].to_numpy())
    assert value < prior_log_loss(predicted["data"], 1)  # better than the priors, if only just
    out = tmp_path / "sub.csv"
    assert predict(predicted["data"], run_copy, out, weak="margin") == 0
    said = capsys.readouterr().out
    assert re.search(rf"{re.escape(str(run_copy))}: leaving out fold1 \(OOF log loss {value:.4f}, class priors "
                     rf"\d\.\d{{4}}, better by less than \d\.\d{{4}}, twice the standard error\)", said)
    assert json.loads((run_copy / "calibration.json").read_text())["left_out"] == [str(run_copy / "fold1")]


def test_shrink_pulls_a_fold_that_learned_nothing_to_its_priors_and_leaves_one_that_learned(tmp_path):
    from ncfm import runs
    from ncfm.predict import shrink_folds

    y = np.array([0] * 30 + [4] * 10 + list(range(8)) * 2)  # mostly ALB: the priors beat a uniform guess
    oofs = {"fold0": pd.DataFrame(uniform(y), columns=list(CLASSES)).assign(y=y),
            "fold1": pd.DataFrame(learned(y), columns=list(CLASSES)).assign(y=y)}
    tests = [uniform(y[:5]), learned(y[:5])]
    said = []
    weights = shrink_folds(tmp_path, [runs.fold_of(tmp_path, 0), runs.fold_of(tmp_path, 1)], tests, oofs, NCFM,
                           said.append)
    assert weights[str(tmp_path / "fold0")] < 0.05 and weights[str(tmp_path / "fold1")] > 0.95
    np.testing.assert_allclose(tests[0].sum(axis=1), 1.0)
    shares = np.bincount(y, minlength=8) + 1.0
    np.testing.assert_allclose(tests[0][0], shares / shares.sum(), atol=0.01)  # fold 0 now says the priors
    assert kaggle_log_loss(y, oofs["fold0"][list(CLASSES)].to_numpy()) < kaggle_log_loss(y, uniform(y))
    assert "--weak-folds shrink" in said[0]


def test_the_default_rule_keeps_a_fold_better_than_the_priors_and_reduces_one_worse_to_them(
        predicted, run_copy, tmp_path, capsys):
    judged_by_oof(run_copy, 0, uniform)  # worse than its training class shares
    judged_by_oof(run_copy, 1, learned)
    out = tmp_path / "sub.csv"
    argv = ["predict", "--data-dir", str(predicted["data"]), "--run", str(run_copy), "--stage", "1", "--tta", "1",
            "--out", str(out)]  # no --weak-folds: the default; one view, so oof.csv is what it judges
    assert ncfm(argv) == 0
    calibration = json.loads((run_copy / "calibration.json").read_text())
    assert calibration["weak_folds"] == "shrink" and calibration["left_out"] == []
    weights = calibration["shrink"]
    assert weights[str(run_copy / "fold0")] < 0.05 and weights[str(run_copy / "fold1")] > 0.95
    fold0 = probs_of(run_copy / "predictions" / "stage1_fold0_tta1.csv")
    fold1 = probs_of(run_copy / "predictions" / "stage1_fold1_tta1.csv")
    shares = training_shares(predicted["data"], 0)
    w0, w1 = weights[str(run_copy / "fold0")], weights[str(run_copy / "fold1")]
    expected = ((w0 * fold0 + (1 - w0) * shares) + (w1 * fold1 + (1 - w1) * training_shares(predicted["data"], 1))) / 2
    expected = calibrate(expected.to_numpy(), calibration["temperature"], calibration["floor"])
    np.testing.assert_allclose(probs_of(out).loc[fold0.index].to_numpy(), expected, atol=2e-3)  # weights rounded


def test_predict_shrink_keeps_every_fold_and_records_the_weights(predicted, run_copy, tmp_path, capsys,
                                                                 no_model_loading):
    out = tmp_path / "sub.csv"
    assert predict(predicted["data"], run_copy, out, weak="shrink") == 0
    calibration = json.loads((run_copy / "calibration.json").read_text())
    assert calibration["weak_folds"] == "shrink" and calibration["left_out"] == []
    assert set(calibration["shrink"]) == {str(run_copy / "fold0"), str(run_copy / "fold1")}
    assert all(0.0 <= w <= 1.0 for w in calibration["shrink"].values())
    assert "pulled towards its class priors" in capsys.readouterr().out
    validate_file(out, NCFM, stage=2, data_dir=predicted["data"])


# ----------------------------------------------------------------------------- validate after predict
def _drop_last_row(df):
    return df.iloc[:-1]


def _add_row(df):
    extra = df.iloc[[0]].assign(image="test_stg2/image_99999.jpg")
    return pd.concat([df, extra])


def _nan(df):
    df = df.copy()
    df.loc[3, "BET"] = np.nan
    return df


def _header(df):
    return df.rename(columns={"NoF": "NOF"})


def _unnormalised(df):
    df = df.copy()
    df.loc[5, "ALB"] += 0.5
    return df


@pytest.mark.parametrize("corrupt, expected", [
    (_drop_last_row, "missing: {last}"),
    (_add_row, "line 30 (test_stg2/image_99999.jpg)"),
    (_nan, "line 5 ({id3}) BET"),
    (_header, "'NOF' should be 'NoF'"),
    (_unnormalised, "line 7 ({id5}) sums to"),
], ids=["missing-id", "extra-id", "nan", "header", "sum"])
def test_validate_rejects_a_damaged_predict_output_naming_the_row(predicted, tmp_path, capsys, corrupt, expected):
    df = pd.read_csv(predicted["stage2"], dtype={"image": str})
    bad = tmp_path / "bad.csv"
    corrupt(df).to_csv(bad, index=False, na_rep="nan")
    assert ncfm(["validate", str(bad), "--data-dir", str(predicted["data"]), "--stage", "2"]) == 2
    err = capsys.readouterr().err
    assert "INVALID" in err
    assert expected.format(last=df.image.iloc[-1], id3=df.image.iloc[3], id5=df.image.iloc[5]) in err


def test_the_report_shows_predicts_blend_of_two_runs(trained_run, tmp_path):
    """Its ensemble figure is calibration.json's: the same weak-fold rule (shrink), mean and run weights fitted on OOF."""
    from ncfm import report, runs

    a = copy_run(trained_run["run"], tmp_path / "a")
    b = copy_run(trained_run["run"], tmp_path / "b")
    for run, half in ((a, 0), (b, 1)):  # two runs that err on different images: each is told half the answers
        for fold in runs.all_folds(run):
            oof = pd.read_csv(fold.oof, dtype={"image": str, "label": str})
            told = (np.arange(len(oof)) % 2 == half)[:, None]
            truth = (oof.label.to_numpy()[:, None] == np.array(CLASSES)[None, :]).astype(float)
            oof[list(CLASSES)] = np.where(told, 0.4 * oof[list(CLASSES)].to_numpy() + 0.6 * truth, oof[list(CLASSES)])
            oof.to_csv(fold.oof, index=False)
    assert predict(trained_run["data"], [a, b], tmp_path / "blend.csv", "--run-weights", "oof", stage=1, tta=1,
                   weak="shrink") == 0
    recorded = runs.read_calibration(a)
    weights = list(recorded["run_weights"].values())
    assert recorded["shrink"] and min(weights) > 0.01 and abs(weights[0] - weights[1]) > 0.01  # a real blend
    shown = report.ensemble_summary([report.load_run(a), report.load_run(b)])
    assert shown["as_predicted"] and shown["run_weights"] == pytest.approx(weights, abs=1e-4)
    assert shown["log_loss"] == pytest.approx(recorded["oof_score"], abs=1e-9)


def test_a_read_only_data_folder_is_predicted_with_its_cache_elsewhere(trained_run, tmp_path):
    """A Kaggle notebook's /kaggle/input cannot be written: --cache-dir puts every decoded image elsewhere."""
    data = Path(shutil.copytree(trained_run["data"], tmp_path / "data", ignore=shutil.ignore_patterns("cache")))
    run = copy_run(trained_run["run"], tmp_path / "run")
    assert predict(data, run, tmp_path / "a.csv", "--cache-dir", str(tmp_path / "cache"), stage=1, tta=2) == 0
    assert not (data / "cache").exists(), "nothing may be written into the data folder"
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 2  # the test images, and the training images' OOF views
    validate_file(tmp_path / "a.csv", NCFM, stage=1, data_dir=data)  # raises when it would not be accepted
