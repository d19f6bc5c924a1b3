"""The fish detector: one RetinaNet fold in the run-folder house, its boxes, and the crop path
(detect -> crop -> classify -> combined CSV) on a small synthetic NCFM with boxes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import kill_after_epoch
from ncfm import NcfmError, detect, runs
from ncfm.boxes import detection_quality, iou
from ncfm.cli import main as ncfm
from ncfm.competition import Competition

REPO = Path(__file__).resolve().parents[1]
DETECT = ["--weights", "none", "--backbone", "resnet_small", "--image-size", "64", "--batch-size", "8"]
CLASSIFY = ["--weights", "none", "--image-size", "75", "--epochs", "1", "--head-epochs", "1",
            "--batch-size", "16", "--tensorboard", "false"]


# ----------------------------------------------------------------------------- pure pieces
def test_iou_of_boxes_in_xywh():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5], [np.nan] * 4])
    np.testing.assert_allclose(iou(a, b), [[1.0, 50 / 150, 0.0, 0.0]])


def test_detection_quality_counts_hits_best_boxes_and_fish_auc():
    truth = pd.DataFrame({"image": ["a", "b", "b"], "x": [0, 0, 50], "y": [0, 0, 50],
                          "width": [10, 10, 10], "height": [10, 10, 10]})
    found = pd.DataFrame({"image": ["a", "b", "b", "e"], "rank": [0, 0, 1, 0], "score": [0.9, 0.8, 0.7, 0.1],
                          "x": [0, 50, 0, 5], "y": [0, 50, 0, 5], "width": [10, 10, 10, 4],
                          "height": [10, 10, 10, 4]})
    q = detection_quality(found, truth, fish_images=["a", "b"], empty_images=["e"])
    assert q["recall@0.5"] == 1.0  # every true box is hit by some found box
    assert q["top1@0.5"] == 1.0 and q["best_iou"] == 1.0
    assert q["fish_auc"] == 1.0 and q["boxed_images"] == 2 and q["true_boxes"] == 3


def test_boxes_map_to_the_squashed_input_and_back():
    wh = np.array([640.0, 360.0])
    box = np.array([[64.0, 36.0, 128.0, 72.0]])
    inside = detect.to_input(box, wh, 64)
    np.testing.assert_allclose(inside, [[6.4, 6.4, 12.8, 12.8]])
    np.testing.assert_allclose(detect.to_original(inside, wh, 64), box)


def test_a_flip_moves_the_boxes_with_the_pixels():
    x = np.zeros((20, 30, 3), np.float32)
    x[2:6, 3:11] = 1.0  # a fish at x 3..11, y 2..6
    boxes, labels = detect.padded_targets([np.array([[3.0, 2.0, 8.0, 4.0]])], 2)
    flipped, fboxes = detect.flip(x, boxes[0], labels[0], horizontal=True, vertical=True)
    bx, by, bw, bh = fboxes[0].astype(int)
    assert flipped[by:by + bh, bx:bx + bw].min() == 1.0 and flipped.sum() == x.sum()
    np.testing.assert_array_equal(fboxes[1], [-1, -1, -1, -1])  # padding stays padding


def test_the_empty_class_is_the_one_without_boxes_or_named():
    comp = Competition(classes=("ALB", "BET", "NoF", "OTHER"))
    truth = pd.DataFrame({"label": ["ALB", "BET", "OTHER"]})
    assert detect.empty_classes(comp, truth) == ["NoF"]
    with pytest.raises(NcfmError, match="--empty-class"):
        detect.empty_classes(comp, truth[truth.label != "OTHER"])  # NoF and OTHER both lack boxes
    assert detect.empty_classes(comp, truth[truth.label != "OTHER"], "NoF") == ["NoF"]


def test_anchor_size_follows_the_small_boxes():
    assert detect.auto_anchor_size(np.array([16.0] * 10)) == pytest.approx(2.0)
    assert detect.auto_anchor_size(np.array([2.0] * 10)) == 1.0  # never below one stride
    assert detect.auto_anchor_size(np.array([500.0] * 10)) == 4.0  # RetinaNet's own


def test_bad_detector_settings_are_refused_before_any_work():
    from ncfm.config import DetectConfig

    with pytest.raises(NcfmError, match="multiple of 32"):
        detect.resolve_detect_config(DetectConfig(weights="none", image_size=100))
    with pytest.raises(NcfmError, match="no pretrained weights"):
        detect.resolve_detect_config(DetectConfig(weights="coco", backbone="resnet_small"))
    with pytest.raises(NcfmError, match="not coco, imagenet, none or a folder"):
        detect.resolve_detect_config(DetectConfig(weights="/nowhere/preset"))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_the_detector_finds_boxes_under_mixed_precision(policy):
    """The box head answers in the compute dtype and the decoder's anchors are float32 (on
    TensorFlow the two would not multiply); float16 compiles with loss scaling."""
    import keras

    from ncfm.config import DetectConfig

    cfg = DetectConfig(weights="none", backbone="resnet_small", image_size=64, mixed_precision=policy)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model, scale, offset = detect.build_detector(cfg, anchor_size=2.0, steps=1)
        pixels = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
        found = detect.find_boxes(model, pixels, ["a.jpg", "b.jpg"], np.array([[640.0, 360.0]] * 2), cfg, scale, offset)
        is_scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert set(found.image) == {"a.jpg", "b.jpg"} and (found["rank"] == 0).sum() == 2
    assert is_scaled == (policy == "mixed_float16")


# ----------------------------------------------------------------------------- a detector run
@pytest.fixture(scope="session")
def boxed_data(tmp_path_factory) -> Path:
    """A small synthetic NCFM (two stages) with its fish boxes imported, split in 2 folds; two fish-like
    decoys on every frame, so the crop path meets boxes that miss the fish."""
    from ncfm.synthetic import make_synthetic

    data = tmp_path_factory.mktemp("boxed") / "data"
    make_synthetic(data, n_train=72, n_test1=8, n_test2=8, scale=0.1, seed=3, decoys=2)
    assert ncfm(["split_train_val", "--data-dir", str(data), "--folds", "2"]) == 0
    assert ncfm(["boxes", "--data-dir", str(data)]) == 0
    return data


@pytest.fixture(scope="session")
def detector_run(boxed_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("det") / "det"
    for fold in (0, 1):
        assert ncfm(["detect", "--data-dir", str(boxed_data), "--fold", str(fold), "--run", str(run),
                     *DETECT, "--epochs", "4", "--test"]) == 0
    return run


@pytest.mark.slow
def test_a_detector_fold_lives_in_the_run_folder_house(detector_run, boxed_data):
    fold = runs.fold_of(detector_run, 0)
    config, state = runs.read_config(fold), runs.read_state(fold)
    assert config["kind"] == runs.DETECTOR and config["empty_classes"] == ["NoF"]
    assert config["mixed_precision"] == "float32" and "CPU without AMX" in config["precision_reason"]
    assert state["finished"] and state["epoch"] == 4
    history = pd.read_csv(fold.history)
    assert list(history.epoch) == [1, 2, 3, 4]
    assert state["best_val_loss"] == pytest.approx(history.val_loss.min(), rel=1e-6)
    assert runs.is_detector(detector_run)
    # every held-out image has a best box (or an explicit nothing)
    manifest = pd.read_csv(boxed_data / "folds.csv")
    found = runs.read_found_boxes(fold.oof_boxes)
    assert set(found.image) == set(manifest.image[manifest.fold == 0])
    assert (found[found["rank"] == 0].groupby("image").size() == 1).all()


def _easy_boxes(root: Path, n: int = 120) -> Path:
    """Bright ellipses (28-40 x 16-24 px) on dark noisy 128x96 frames; every third image empty."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    classes, entries = ["ALB", "BET", "NoF"], {"ALB": [], "BET": []}
    for i in range(n):
        label = classes[i % 3]
        frame = (rng.integers(30, 90, 3) + rng.normal(0, 12, (96, 128, 3))).clip(0, 255).astype("uint8")
        image = Image.fromarray(frame)
        if label != "NoF":
            w, h = int(rng.integers(28, 40)), int(rng.integers(16, 24))
            x, y = int(rng.integers(0, 128 - w)), int(rng.integers(0, 96 - h))
            ImageDraw.Draw(image).ellipse([x, y, x + w - 1, y + h - 1],
                                          fill=(240, 210, 40) if label == "ALB" else (40, 220, 240))
            entries[label].append({"filename": f"img_{i:05d}.jpg", "class": "image",
                                   "annotations": [{"class": "rect", "x": x, "y": y, "width": w, "height": h}]})
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
        image.save(root / "train" / label / f"img_{i:05d}.jpg", quality=95)
    (root / "boxes").mkdir()
    for label, entry in entries.items():
        (root / "boxes" / f"{label.lower()}_labels.json").write_text(json.dumps(entry))
    (root / "test").mkdir()
    Image.fromarray(np.full((96, 128, 3), 60, "uint8")).save(root / "test" / "t0.jpg")
    (root / "sample_submission.csv").write_text("image,ALB,BET,NoF\nt0.jpg,0.3,0.3,0.4\n")
    return root


@pytest.mark.slow
def test_oof_boxes_overlap_the_true_fish_better_than_chance(tmp_path):
    data = _easy_boxes(tmp_path / "data")
    assert ncfm(["split_train_val", "--data-dir", str(data), "--folds", "2", "--groups", "none"]) == 0
    assert ncfm(["boxes", "--data-dir", str(data)]) == 0
    run = tmp_path / "det"
    assert ncfm(["detect", "--data-dir", str(data), "--fold", "0", "--run", str(run), *DETECT,
                 "--epochs", "20", "--patience", "0"]) == 0
    from ncfm.boxes import read_boxes

    truth = read_boxes(data / "boxes.csv")
    found = runs.read_found_boxes(runs.fold_of(run, 0).oof_boxes)
    best = found[found["rank"] == 0].set_index("image")[["x", "y", "width", "height"]]
    images = sorted(set(truth.image) & set(best.index))
    true_boxes = [truth[truth.image == i][["x", "y", "width", "height"]].to_numpy() for i in images]
    # chance: the same boxes, each given to another image's fish (a detector blind to the pixels
    # scores the same either way)
    learned = [iou(best.loc[[i]].to_numpy(), t).max() for i, t in zip(images, true_boxes)]
    shifted = [iou(best.loc[[i]].to_numpy(), t).max() for i, t in zip(np.roll(images, 1), true_boxes)]
    assert np.mean(learned) > 1.5 * np.mean(shifted) + 0.05, (np.mean(learned), np.mean(shifted))
    assert runs.read_state(runs.fold_of(run, 0))["oof_fish_auc"] > 0.8


@pytest.mark.slow
def test_test_boxes_are_written_for_every_stage(detector_run, boxed_data):
    from ncfm.dataset import find_test_images

    for stage in (1, 2):
        found = runs.read_found_boxes(runs.fold_of(detector_run, 1).test_boxes(stage))
        tests, _ = find_test_images(boxed_data, stage)
        assert set(found.image) == set(tests.path)


@pytest.mark.slow
def test_a_killed_detector_fold_resumes_from_its_last_checkpoint(boxed_data, tmp_path):
    run = tmp_path / "det"
    command = [sys.executable, "-m", "ncfm.cli", "detect", "--data-dir", str(boxed_data), "--fold", "0",
               "--run", str(run), *DETECT, "--epochs", "4", "--checkpoint-seconds", "0",
               "--cache-dir", str(tmp_path / "cache")]
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    state_path = run / "fold0" / "state.json"
    state = kill_after_epoch(command, env, state_path, epoch=2)
    assert 2 <= state["epoch"] < 4 and not state["finished"]
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming after epoch {state['epoch']}" in (run / "fold0" / "train.log").read_text()
    history = pd.read_csv(run / "fold0" / "history.csv")
    assert list(history.epoch) == [1, 2, 3, 4]
    assert json.loads(state_path.read_text())["finished"]


def _started_copy(detector_run: Path, tmp_path: Path) -> Path:
    """Detector fold 0 as a kill after its last epoch leaves it: last.keras and best.keras, no state.json."""
    import shutil

    run = tmp_path / "det"
    shutil.copytree(detector_run / "fold0", run / "fold0", ignore=shutil.ignore_patterns("state.json", "*.lock"))
    return run


def test_a_detector_fold_resumes_with_another_patience(detector_run, boxed_data, tmp_path, capsys):
    run = _started_copy(detector_run, tmp_path)
    assert ncfm(["detect", "--data-dir", str(boxed_data), "--fold", "0", "--run", str(run), *DETECT,
                 "--epochs", "4", "--patience", "9"]) == 0  # patience is an execution setting, as for a classifier
    assert runs.read_state(runs.fold_of(run, 0))["finished"]
    assert "resuming after epoch 4" in capsys.readouterr().out


def test_a_detector_checkpoint_without_its_config_is_refused(detector_run, boxed_data, tmp_path, capsys):
    run = _started_copy(detector_run, tmp_path)
    (run / "fold0" / "config.json").unlink()
    assert ncfm(["detect", "--data-dir", str(boxed_data), "--fold", "0", "--run", str(run), *DETECT,
                 "--epochs", "4"]) == 2
    err = capsys.readouterr().err
    assert "config.json: missing beside" in err and "--retrain" in err
    assert not (run / "fold0" / "config.json").exists(), "the settings it started with must not be guessed"


def test_a_detector_run_is_not_resumed_as_a_classifier(detector_run, boxed_data, tmp_path, capsys):
    run = _started_copy(detector_run, tmp_path)
    assert ncfm(["train", "--data-dir", str(boxed_data), "--fold", "0", "--run", str(run), "--weights", "none",
                 "--image-size", "75", "--no-report"]) == 2
    assert "a detector fold, not a classifier" in capsys.readouterr().err


@pytest.mark.slow
def test_a_detector_run_trains_under_jax(boxed_data, tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="jax")
    done = subprocess.run([sys.executable, "-m", "ncfm.cli", "detect", "--data-dir", str(boxed_data), "--fold", "0",
                           "--run", str(tmp_path / "det"), *DETECT, "--epochs", "1",
                           "--cache-dir", str(tmp_path / "cache")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    fold = runs.fold_of(tmp_path / "det", 0)
    assert runs.read_config(fold)["backend"] == "jax"
    assert not runs.read_found_boxes(fold.oof_boxes).empty


# ----------------------------------------------------------------------------- crop, classify, combine
@pytest.mark.slow
def test_the_crop_path_writes_validated_csvs_for_both_stages(detector_run, boxed_data, tmp_path, capsys):
    crop_run, whole_run = tmp_path / "crop", tmp_path / "whole"
    for fold in ("0", "1"):
        assert ncfm(["train", "--data-dir", str(boxed_data), "--fold", fold, "--run", str(crop_run),
                     "--detector", str(detector_run), *CLASSIFY]) == 0
        assert ncfm(["train", "--data-dir", str(boxed_data), "--fold", fold, "--run", str(whole_run), *CLASSIFY]) == 0
    config = runs.read_config(runs.fold_of(crop_run, 0))
    assert config["crop_classes"] == ["ALB", "BET", "DOL", "LAG", "OTHER", "SHARK", "YFT"]
    # one epoch from scratch: whether a fold beats the class priors is chance; here every fold is used
    for stage in ("1", "2"):
        out = tmp_path / f"crop_stage{stage}.csv"
        assert ncfm(["predict", "--data-dir", str(boxed_data), "--run", str(crop_run), "--stage", stage,
                     "--tta", "1", "--out", str(out), "--keep-weak-folds"]) == 0
        assert ncfm(["validate", str(out), "--data-dir", str(boxed_data), "--stage", stage]) == 0
    blend = tmp_path / "blend.csv"
    assert ncfm(["predict", "--data-dir", str(boxed_data), "--run", str(crop_run), "--run", str(whole_run),
                 "--run-weights", "oof", "--stage", "2", "--tta", "1", "--out", str(blend), "--keep-weak-folds"]) == 0
    weights = runs.read_calibration(crop_run)["run_weights"]
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-3) and min(weights.values()) >= 0
    # per-fold parts are saved before combining: the crop classifier's test file per fold and stage
    assert len(list((crop_run / "predictions").glob("stage2_fold*_tta1.csv"))) == 2
    # per image, by the detector's confidence in its box
    confident = tmp_path / "confident.csv"
    assert ncfm(["predict", "--data-dir", str(boxed_data), "--run", str(crop_run), "--run", str(whole_run),
                 "--run-weights", "confidence", "--stage", "2", "--tta", "1", "--out", str(confident),
                 "--weak-folds", "keep"]) == 0
    record = runs.read_calibration(crop_run)["run_weights"]
    assert record["crop_run"] == str(crop_run) and 0.0 <= record["mean_test_weight"] <= 1.0
    assert "confidence blend fitted on OOF" in capsys.readouterr().out
    assert ncfm(["validate", str(confident), "--data-dir", str(boxed_data), "--stage", "2"]) == 0
    assert ncfm(["predict", "--data-dir", str(boxed_data), "--run", str(whole_run), "--run-weights", "confidence",
                 "--stage", "2", "--tta", "1", "--out", str(tmp_path / "no.csv")]) == 2
    assert "blends one crop run" in capsys.readouterr().err

    # a crop classifier fold that learned nothing (uniform over the fish classes) is left out of the
    # crop run, judged as for a whole-image run: its oof.csv against its own crop manifest's priors
    for fold, learned in ((0, False), (1, True)):
        fold_dir = crop_run / f"fold{fold}"
        oof = pd.read_csv(fold_dir / "oof.csv", dtype={"image": str, "label": str})
        fish = config["crop_classes"]
        probs = np.full((len(oof), len(fish)), 1 / len(fish))
        if learned:
            probs = np.full((len(oof), len(fish)), 0.1 / (len(fish) - 1))
            probs[np.arange(len(oof)), oof.label.map(fish.index)] = 0.9
        oof[fish] = probs
        oof.to_csv(fold_dir / "oof.csv", index=False)
        state = json.loads((fold_dir / "state.json").read_text())
        older = {k: v for k, v in state.items() if not k.startswith("prior_") and k != "no_better_than_priors"}
        (fold_dir / "state.json").write_text(json.dumps(older))
    without = tmp_path / "without_fold0.csv"
    assert ncfm(["predict", "--data-dir", str(boxed_data), "--run", str(crop_run), "--stage", "2", "--tta", "1",
                 "--out", str(without), "--weak-folds", "priors"]) == 0
    assert f"{crop_run}: leaving out fold0 (OOF log loss {np.log(len(fish)):.4f}" in capsys.readouterr().out
    assert runs.read_calibration(crop_run)["left_out"] == [str(crop_run / "fold0")]
    assert ncfm(["validate", str(without), "--data-dir", str(boxed_data), "--stage", "2"]) == 0


@pytest.mark.slow
def test_a_crop_runs_notebook_finds_boxes_and_cuts_crops_of_the_hidden_test_set(detector_run, boxed_data, tmp_path,
                                                                                monkeypatch):
    from kaggle_notebook import OWNER, fake_input, hidden_test_set, kaggle_kernel, run_notebook, same_csv

    # copies: predicting other test images rewrites the detector's test boxes and the crop set's record
    data, detector, crop_run = tmp_path / "data", tmp_path / "det", tmp_path / "crop"
    shutil.copytree(boxed_data, data, ignore=shutil.ignore_patterns("cache", "crops"))
    shutil.copytree(detector_run, detector)
    for fold in ("0", "1"):
        assert ncfm(["train", "--data-dir", str(data), "--fold", fold, "--run", str(crop_run),
                     "--detector", str(detector), *CLASSIFY, "--no-report"]) == 0
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert ncfm(["predict", "--data-dir", str(data), "--run", str(crop_run), "--tta", "2", "--weak-folds", "keep",
                 "--out", str(tmp_path / "public.csv"), "--no-report", *cache]) == 0
    out = tmp_path / "kaggle"
    assert ncfm(["notebook", "--run", str(crop_run), "--data-dir", str(data), "--out", str(out), "--owner", OWNER,
                 "--wheels", "none"]) == 0
    assert (out / "dataset" / "runs" / "det-detector" / "fold1" / "best.keras").is_file()
    code_file = json.loads((out / "notebook" / "kernel-metadata.json").read_text())["code_file"]

    hidden = hidden_test_set(data, tmp_path / "hidden", n=6)
    root = fake_input(tmp_path / "input", hidden, out / "dataset", "the-nature-conservancy-fisheries-monitoring",
                      new_style=True, dataset_slug="kaggle-ncfm-models")
    printed = run_notebook(out / "notebook" / code_file, kaggle_kernel(tmp_path, monkeypatch), tmp_path / "nb",
                           monkeypatch, root, rerun=True)
    assert any("no crops of these 6 stage-1 test images yet" in text for text in printed), printed
    expected = tmp_path / "hidden.csv"
    assert ncfm(["predict", "--data-dir", str(hidden), "--folds-csv", str(data / "folds.csv"), "--run", str(crop_run),
                 "--tta", "2", "--weak-folds", "keep", "--out", str(expected), "--no-report", *cache]) == 0
    same_csv(tmp_path / "nb" / "working" / "submission.csv", expected)


def test_predict_refuses_a_detector_run_and_says_what_to_do(tmp_path, capsys):
    fold = runs.fold_of(tmp_path / "det", 0)
    fold.dir.mkdir(parents=True)
    runs.write_config(fold, {"kind": runs.DETECTOR})
    fold.best.write_bytes(b"")  # only its presence counts here
    from ncfm.predict import usable_folds

    with pytest.raises(NcfmError, match="a detector run"):
        usable_folds(tmp_path / "det", Competition(classes=("ALB", "NoF")))


def test_the_auto_detector_batch_fills_an_accelerator_and_stays_8_on_a_cpu():
    from ncfm.detect import auto_batch_size

    assert auto_batch_size(None, 512) == 8  # a CPU
    assert auto_batch_size(139.8, 512) == 64  # an H200: capped
    assert auto_batch_size(15.0, 512) == 8  # a 16 GB T4 at 512 px
    assert auto_batch_size(15.0, 256) == 32  # the same card at a quarter of the pixels
    assert auto_batch_size(40.0, 512) == 32
    assert auto_batch_size(2.0, 1024) == 8  # never below 8
