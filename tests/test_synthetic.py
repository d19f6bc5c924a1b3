"""synthetic.py: the NCFM-shaped dataset has Kaggle's layout, realistic structure, and is deterministic."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from PIL import Image

from ncfm.competition import NCFM_CLASSES as CLASSES
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


def test_decoys_change_every_frame_but_never_the_fish_or_their_boxes(tmp_path):
    import numpy as np

    kw = dict(n_train=40, n_test1=3, n_test2=3, boats=6, scale=0.1, seed=3, small_fish=True)
    plain = make_synthetic(tmp_path / "plain", **kw)
    decoys = make_synthetic(tmp_path / "decoys", decoys=3, **kw)
    assert decoys["fish_boxes"] == plain["fish_boxes"]  # decoys are not fish: no box
    assert (tmp_path / "plain" / "test_boxes.csv").read_text() == (tmp_path / "decoys" / "test_boxes.csv").read_text()
    images = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").rglob("*.jpg"))
    nof = [p for p in images if "NoF" in str(p)]
    assert nof, "the test's premise: empty frames to put decoys on"
    for rel in images[:10] + nof[:3]:  # decoys on every kind of frame, empty ones included
        a = np.asarray(Image.open(tmp_path / "plain" / rel), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "decoys" / rel), dtype=np.int16)
        assert np.abs(a - b).max() > 60, rel
    make_synthetic(tmp_path / "none", decoys=0, **kw)
    assert tree_digest(tmp_path / "none") == tree_digest(tmp_path / "plain")


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
    (dict(decoys=-1), "decoys=-1"),
])
def test_bad_settings_are_refused_with_the_value(tmp_path, kw, message):
    from ncfm import NcfmError

    with pytest.raises(NcfmError, match=message):
        make_synthetic(tmp_path, **kw)


# ----------------------------------------------------------------------------- other competitions
SMALL = dict(n_train=60, n_test1=12, boats=6, scale=0.05, seed=1)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict:
    """One small dataset per non-NCFM layout, each at its default number of classes. Read-only."""
    root = tmp_path_factory.mktemp("layouts")
    return {name: (root / name, make_synthetic(root / name, layout=name, **SMALL))
            for name in ("dog-breed", "plant-seedlings", "aerial-cactus")}


def files(folder, pattern="*"):
    return sorted(p.name for p in folder.glob(pattern) if p.is_file())


def test_dog_breed_has_flat_train_labels_csv_without_extension_and_a_probability_sample(layouts):
    root, summary = layouts["dog-breed"]
    assert sorted(p.name for p in root.iterdir()) == [
        "labels.csv", "sample_submission.csv", "test", "test_truth.csv", "train", "train_boats.csv"]
    train = files(root / "train")
    assert len(train) == 60 and all(len(f) == 36 and f.endswith(".jpg") for f in train)
    assert pd.Series(train).str.fullmatch(r"[0-9a-f]{32}\.jpg").all()
    labels = pd.read_csv(root / "labels.csv")
    assert list(labels.columns) == ["id", "breed"]
    assert sorted(labels["id"] + ".jpg") == train
    breeds = sorted(labels["breed"].unique())
    assert len(breeds) == 6 and all(b == b.lower() and " " not in b for b in breeds)
    assert summary["class_counts"] == labels["breed"].value_counts().to_dict()

    sample = pd.read_csv(root / "sample_submission.csv")
    assert list(sample.columns) == ["id", *breeds]
    assert sorted(sample["id"] + ".jpg") == files(root / "test") and len(sample) == 12
    assert (sample[breeds] == 1 / 6).all().all()


def test_plant_seedlings_has_species_folders_with_spaces_and_a_one_label_sample(layouts):
    root, summary = layouts["plant-seedlings"]
    folders = sorted(p.name for p in (root / "train").iterdir())
    assert len(folders) == 5 and folders == sorted(summary["class_counts"])
    assert any(" " in f for f in folders) and any("-" in f for f in folders)
    assert all(files(root / "train" / f, "*.png") for f in folders)
    assert not (root / "labels.csv").exists() and not (root / "train.csv").exists()
    assert pd.Series(files(root / "test")).str.fullmatch(r"[0-9a-f]{9}\.png").all()

    sample = pd.read_csv(root / "sample_submission.csv")
    assert list(sample.columns) == ["file", "species"]
    assert sorted(sample["file"]) == files(root / "test")
    assert set(sample["species"]) <= set(folders)


def test_aerial_cactus_is_32x32_with_binary_labels_mostly_ones(layouts):
    root, summary = layouts["aerial-cactus"]
    train, test = files(root / "train"), files(root / "test")
    assert pd.Series(train + test).str.fullmatch(r"[0-9a-f]{32}\.jpg").all()
    assert {Image.open(p).size for p in [*(root / "train").iterdir(), *(root / "test").iterdir()]} == {(32, 32)}
    labels = pd.read_csv(root / "train.csv")
    assert list(labels.columns) == ["id", "has_cactus"]
    assert sorted(labels["id"]) == train  # ids carry .jpg
    assert set(labels["has_cactus"]) == {0, 1} and 0.6 <= labels["has_cactus"].mean() <= 0.9
    assert summary["class_counts"] == {"0": (labels["has_cactus"] == 0).sum(), "1": labels["has_cactus"].sum()}

    sample = pd.read_csv(root / "sample_submission.csv")
    assert list(sample.columns) == ["id", "has_cactus"]
    assert sorted(sample["id"]) == test and (sample["has_cactus"] == 0.5).all()


@pytest.mark.parametrize("layout, id_column", [("dog-breed", "id"), ("plant-seedlings", "file"),
                                                ("aerial-cactus", "id")])
def test_truth_and_boats_files_name_the_ids_as_the_sample_does(layouts, layout, id_column):
    root, summary = layouts[layout]
    sample = pd.read_csv(root / "sample_submission.csv")
    truth = pd.read_csv(root / "test_truth.csv", dtype=str)
    assert list(truth.columns) == [id_column, "label"]
    assert truth[id_column].tolist() == sample[id_column].tolist()
    assert set(truth["label"]) <= set(summary["class_counts"])
    assert not (root / "test_stg1").exists() and not (root / "test_stg2").exists()
    boats = pd.read_csv(root / "train_boats.csv")
    assert list(boats.columns) == ["image", "boat"]
    assert sorted(boats["image"]) == sorted(p.relative_to(root).as_posix() for p in (root / "train").rglob("*.*"))


@pytest.mark.parametrize("layout", ["dog-breed", "plant-seedlings", "aerial-cactus"])
def test_other_layouts_keep_boats_with_near_duplicate_frames(layouts, layout):
    root, _ = layouts[layout]
    boats = pd.read_csv(root / "train_boats.csv")
    assert boats["boat"].nunique() == 6 and boats["boat"].value_counts().min() >= 3


@pytest.mark.parametrize("layout", ["dog-breed", "plant-seedlings", "aerial-cactus"])
def test_other_layouts_are_byte_identical_for_a_seed(tmp_path, layout):
    kw = dict(SMALL, n_train=20, n_test1=3, layout=layout, n_classes=2 if layout != "aerial-cactus" else None)
    make_synthetic(tmp_path / "a", **kw)
    make_synthetic(tmp_path / "b", workers=2, **kw)
    make_synthetic(tmp_path / "c", **{**kw, "seed": 2})
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def test_n_classes_is_respected_up_to_all_120_dog_breeds(tmp_path):
    summary = make_synthetic(tmp_path, n_train=600, n_test1=5, boats=5, scale=0.01, layout="dog-breed", n_classes=120)
    assert len(summary["class_counts"]) == 120 and min(summary["class_counts"].values()) == 5
    header = (tmp_path / "sample_submission.csv").read_text().split("\n")[0].split(",")
    assert len(header) == 121 and header[1:] == sorted(header[1:])
    assert set(pd.read_csv(tmp_path / "labels.csv")["breed"]) == set(header[1:])


def test_every_class_gets_its_own_look_up_to_120():
    from ncfm.synthetic import DOG_BREEDS, _looks

    looks = _looks("dog-breed", list(DOG_BREEDS))
    assert len({(lk.shape, lk.stripes, str(lk.colours)) for lk in looks.values()}) == 120
    assert len({lk.shape for lk in list(looks.values())[:6]}) == 6  # the first six differ in shape alone


def test_cli_writes_a_plant_seedlings_layout_with_n_classes(tmp_path, capsys):
    args = ["make_synthetic", str(tmp_path / "d"), "--layout", "plant-seedlings", "--n-classes", "3",
            "--n-train", "20", "--n-test1", "3", "--boats", "5", "--scale", "0.05"]
    assert cli_main(args) == 0
    assert "wrote 20 train" in capsys.readouterr().out
    assert len(list((tmp_path / "d" / "train").iterdir())) == 3


@pytest.mark.parametrize("kw, message", [
    (dict(layout="paddy"), r"layout='paddy'; known layouts: ncfm, dog-breed, plant-seedlings, aerial-cactus"),
    (dict(layout="dog-breed", n_classes=121), "n_classes=121.*2 to 120"),
    (dict(layout="plant-seedlings", n_classes=1), "n_classes=1.*2 to 12"),
    (dict(layout="aerial-cactus", n_classes=3), "n_classes=3.*exactly 2"),
    (dict(n_classes=5), "n_classes=5.*exactly 8"),
    (dict(layout="dog-breed", n_test2=5), "n_test2=5.*only the ncfm layout"),
    (dict(layout="aerial-cactus", nested_stg2=True), "nested_stg2=True.*only the ncfm layout"),
    (dict(layout="dog-breed", n_classes=20, n_train=60), "n_train=60; need at least 100"),
])
def test_bad_layout_settings_are_refused_with_the_value(tmp_path, kw, message):
    from ncfm import NcfmError

    with pytest.raises(NcfmError, match=message):
        make_synthetic(tmp_path / "d", **kw)
    assert not (tmp_path / "d").exists()
