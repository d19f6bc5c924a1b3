"""synthetic.py: the NCFM-shaped dataset has Kaggle's layout, realistic structure, and is deterministic."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from PIL import Image

from ncfm import CLASSES
from ncfm.cli import main as cli_main
from ncfm.dataset import find_test_images, find_train_images
from ncfm.synthetic import KAGGLE_SIZES, _boat_size, make_synthetic


def tree_digest(root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_matches_kaggle(synthetic_data):
    train = find_train_images(synthetic_data)
    assert len(train) == 160 and set(train["label"]) == set(CLASSES)
    assert train["image"].str.fullmatch(r"train/\w+/img_\d{5}\.jpg").all()
    test1, message = find_test_images(synthetic_data, 1)
    assert len(test1) == 20 and "sample_submission_stg1.csv" in message
    assert test1["id"].str.fullmatch(r"img_\d{5}\.jpg").all()
    assert not set(test1["id"]) & {p.split("/")[-1] for p in train["image"]}


def test_sample_submissions_are_uniform_and_stage2_lists_stage1_first(synthetic_data):
    s1 = pd.read_csv(synthetic_data / "sample_submission_stg1.csv")
    s2 = pd.read_csv(synthetic_data / "sample_submission_stg2.csv")
    assert list(s1.columns) == ["image", *CLASSES]
    assert (s1[list(CLASSES)] == 0.125).all().all()
    assert s2["image"].iloc[:20].tolist() == s1["image"].tolist()
    assert s2["image"].iloc[20:].str.fullmatch(r"test_stg2/image_\d{5}\.jpg").all()
    test2, _ = find_test_images(synthetic_data, 2)
    assert test2["id"].tolist() == s2["image"].tolist()


def test_image_sizes_are_kaggle_sizes_times_scale(synthetic_data):
    sizes = {Image.open(synthetic_data / p).size for p in find_train_images(synthetic_data)["image"]}
    assert sizes <= {(round(w * 0.1), round(h * 0.1)) for w, h in KAGGLE_SIZES}
    assert _boat_size(0, 12, 1.0) == (1280, 720)


def test_every_class_appears_on_several_boats(synthetic_data):
    boats = pd.read_csv(synthetic_data / "train_boats.csv")
    boats["label"] = boats["image"].str.split("/").str[1]
    assert len(boats) == 160
    assert (boats.groupby("label")["boat"].nunique() >= 5).all()


def test_videos_give_near_duplicate_frames(synthetic_data):
    """Several frames per boat: the leak that group folds must stop."""
    boats = pd.read_csv(synthetic_data / "train_boats.csv")
    assert boats["boat"].value_counts().min() >= 3


def test_stage2_shows_only_boats_never_seen_in_training(synthetic_data):
    truth = pd.read_csv(synthetic_data / "test_truth.csv")
    train_boats = set(pd.read_csv(synthetic_data / "train_boats.csv")["boat"])
    assert set(truth.query("stage == 2")["boat"]).isdisjoint(train_boats)
    assert set(truth.query("stage == 1")["boat"]) <= train_boats


def test_class_counts_follow_ncfm_imbalance_with_a_floor():
    from ncfm.synthetic import _class_counts

    counts = _class_counts(400)
    assert sum(counts.values()) == 400
    assert counts["ALB"] == max(counts.values()) and counts["YFT"] > counts["BET"]
    assert min(counts.values()) >= 15  # enough for 5 folds
    assert _class_counts(3777)["LAG"] == 67  # NCFM's own count at NCFM's size


def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path):
    kw = dict(n_train=40, n_test1=3, n_test2=3, boats=6, scale=0.05)
    make_synthetic(tmp_path / "a", seed=3, **kw)
    make_synthetic(tmp_path / "b", seed=3, workers=2, **kw)
    make_synthetic(tmp_path / "c", seed=4, **kw)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def test_nested_stage2_folder_is_found(tmp_path):
    make_synthetic(tmp_path, n_train=40, n_test1=3, n_test2=4, boats=6, scale=0.05, nested_stg2=True)
    test2, _ = find_test_images(tmp_path, 2)
    assert test2["path"].iloc[-1].startswith("test_stg2/test_stg2/image_")
    assert test2["id"].iloc[-1].startswith("test_stg2/image_")


def test_cli_refuses_a_non_empty_folder_without_force(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    args = ["make_synthetic", str(tmp_path), "--n-train", "40", "--n-test1", "2", "--n-test2", "2",
            "--boats", "6", "--scale", "0.05"]
    assert cli_main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli_main(args + ["--force"]) == 0
    assert "wrote 40 train" in capsys.readouterr().out
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("kw, message", [
    (dict(n_train=10), "n_train=10"),
    (dict(boats=2), "boats=2"),
    (dict(scale=0), "scale=0"),
])
def test_bad_settings_are_refused_with_the_value(tmp_path, kw, message):
    from ncfm import NcfmError

    with pytest.raises(NcfmError, match=message):
        make_synthetic(tmp_path, **kw)
