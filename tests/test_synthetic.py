"""synthetic.py: the NCFM-shaped dataset has Kaggle's layout, realistic structure, and is deterministic;
so do the other competitions' layouts, and where the answer is not one class per image (Planet's tags,
Pawpularity's score, APTOS's grade) the image shows it."""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
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
OTHER_LAYOUTS = ("dog-breed", "plant-seedlings", "aerial-cactus", "planet", "pawpularity", "aptos")
TRAIN_FOLDER = {"planet": "train-jpg", "aptos": "train_images"}  # else train/


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict:
    """One small dataset per non-NCFM layout, each at its default number of classes. Read-only."""
    root = tmp_path_factory.mktemp("layouts")
    return {name: (root / name, make_synthetic(root / name, layout=name, **SMALL)) for name in OTHER_LAYOUTS}


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


@pytest.mark.parametrize("layout, id_column, label_column, sample_name", [
    ("dog-breed", "id", "label", "sample_submission.csv"),
    ("plant-seedlings", "file", "label", "sample_submission.csv"),
    ("aerial-cactus", "id", "label", "sample_submission.csv"),
    ("planet", "image_name", "tags", "sample_submission_v2.csv"),
    ("pawpularity", "Id", "Pawpularity", "sample_submission.csv"),
    ("aptos", "id_code", "diagnosis", "sample_submission.csv")])
def test_truth_and_boats_files_name_the_ids_as_the_sample_does(layouts, layout, id_column, label_column, sample_name):
    root, summary = layouts[layout]
    sample = pd.read_csv(root / sample_name, dtype=str)
    truth = pd.read_csv(root / "test_truth.csv", dtype=str)
    assert list(truth.columns) == [id_column, label_column]
    assert truth[id_column].tolist() == sample[id_column].tolist()
    labels = truth[label_column].str.split().explode() if layout == "planet" else truth[label_column]
    if layout == "pawpularity":
        assert labels.astype(int).between(1, 100).all()
    else:
        assert set(labels) <= set(summary["class_counts"])
    assert not (root / "test_stg1").exists() and not (root / "test_stg2").exists()
    boats = pd.read_csv(root / "train_boats.csv")
    assert list(boats.columns) == ["image", "boat"]
    train = root / TRAIN_FOLDER.get(layout, "train")
    assert sorted(boats["image"]) == sorted(p.relative_to(root).as_posix() for p in train.rglob("*.*"))


@pytest.mark.parametrize("layout", OTHER_LAYOUTS)
def test_other_layouts_keep_boats_with_near_duplicate_frames(layouts, layout):
    root, _ = layouts[layout]
    boats = pd.read_csv(root / "train_boats.csv")
    assert boats["boat"].nunique() == 6 and boats["boat"].value_counts().min() >= 3


@pytest.mark.parametrize("layout", OTHER_LAYOUTS)
def test_other_layouts_are_byte_identical_for_a_seed(tmp_path, layout):
    n_classes = None if layout in ("aerial-cactus", "pawpularity", "aptos") else 2
    kw = dict(SMALL, n_train=25 if layout == "aptos" else 20, n_test1=3, layout=layout, n_classes=n_classes)
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
    (dict(layout="paddy"), r"layout='paddy'; known layouts: ncfm, dog-breed, plant-seedlings, aerial-cactus, "
                           r"planet, pawpularity, aptos$"),
    (dict(layout="dog-breed", n_classes=121), "n_classes=121.*2 to 120"),
    (dict(layout="plant-seedlings", n_classes=1), "n_classes=1.*2 to 12"),
    (dict(layout="aerial-cactus", n_classes=3), "n_classes=3.*exactly 2"),
    (dict(n_classes=5), "n_classes=5.*exactly 8"),
    (dict(layout="dog-breed", n_test2=5), "n_test2=5.*only the ncfm layout"),
    (dict(layout="aerial-cactus", nested_stg2=True), "nested_stg2=True.*only the ncfm layout"),
    (dict(layout="dog-breed", n_classes=20, n_train=60), "n_train=60; need at least 100"),
    (dict(layout="planet", n_classes=18), "n_classes=18.*2 to 17 tags"),
    (dict(layout="planet", n_classes=1), "n_classes=1.*2 to 17 tags"),
    (dict(layout="pawpularity", n_classes=3), r"n_classes=3.*a number per image.*leave n_classes out"),
    (dict(layout="aptos", n_classes=4), r"n_classes=4.*exactly 5 grades.*leave n_classes out"),
    (dict(layout="planet", n_train=19), "n_train=19; need at least 20"),
    (dict(layout="aptos", n_train=20), "n_train=20; need at least 25"),
    (dict(layout="pawpularity", small_fish=True), "small_fish=True.*pawpularity"),
    (dict(layout="aptos", n_test2=5), "n_test2=5.*only the ncfm layout"),
])
def test_bad_layout_settings_are_refused_with_the_value(tmp_path, kw, message):
    from ncfm import NcfmError

    with pytest.raises(NcfmError, match=message):
        make_synthetic(tmp_path / "d", **kw)
    assert not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------- answers that are not one class
BIG = dict(n_train=400, n_test1=20, boats=12, seed=2)  # the default n_train: what the pipeline sees


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> dict:
    """planet (at the default scale: its objects must be large enough to keep their colour through
    JPEG), pawpularity and aptos at the default n_train=400. Read-only."""
    root = tmp_path_factory.mktemp("big")
    scales = {"planet": 0.25, "pawpularity": 0.1, "aptos": 0.1}
    return {name: (root / name, make_synthetic(root / name, layout=name, scale=scale, **BIG))
            for name, scale in scales.items()}


def spearman(a, b) -> float:
    return pd.Series(a).rank().corr(pd.Series(b).rank())


def bright_hues(path) -> tuple[np.ndarray, int]:
    """The hues (0-255) of an image's saturated, bright pixels, and its number of pixels."""
    x = np.asarray(Image.open(path).convert("RGB").convert("HSV")).astype(int)
    return x[(x[..., 1] > 150) & (x[..., 2] > 120)][:, 0], x.shape[0] * x.shape[1]


def hue_share(hues: tuple[np.ndarray, int], hue: float, width: int = 8) -> float:
    """The share of an image's pixels of one saturated, bright hue (0-1): what an object of it covers."""
    d = np.abs(hues[0] - round(hue * 255))
    return float((np.minimum(d, 256 - d) <= width).sum() / hues[1])


def yellow_share(path) -> float:
    """The share of an image's pixels in APTOS's exudate yellow."""
    x = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return float(((x[..., 0] > 200) & (x[..., 1] > 170) & (x[..., 2] < 140)).mean())


def test_planet_has_kaggles_files_names_and_tags(layouts):
    root, summary = layouts["planet"]
    assert sorted(p.name for p in root.iterdir()) == [
        "sample_submission_v2.csv", "test-jpg", "test_truth.csv", "train-jpg", "train_boats.csv", "train_v2.csv"]
    assert files(root / "train-jpg") == sorted(f"train_{n}.jpg" for n in range(60))
    assert files(root / "test-jpg") == sorted(f"test_{n}.jpg" for n in range(12))
    assert {Image.open(p).size[0] == Image.open(p).size[1] for p in (root / "train-jpg").iterdir()} == {True}

    labels = pd.read_csv(root / "train_v2.csv", dtype=str, keep_default_na=False)
    assert list(labels.columns) == ["image_name", "tags"]
    assert labels["image_name"].tolist() == [f"train_{n}" for n in range(60)]  # Kaggle's order, no .jpg
    vocabulary = list(summary["class_counts"])
    assert len(vocabulary) == 6 and {"primary", "clear"} <= set(vocabulary) and vocabulary == sorted(vocabulary)
    tags = labels["tags"].str.split()
    assert (tags.str.len() >= 1).all() and set(tags.explode()) == set(vocabulary)
    assert all(t == sorted(t) for t in tags)  # as Kaggle writes them: "agriculture clear primary"
    assert summary["class_counts"] == {v: int(tags.apply(lambda t, v=v: v in t).sum()) for v in vocabulary}

    sample = pd.read_csv(root / "sample_submission_v2.csv")
    assert list(sample.columns) == ["image_name", "tags"]
    assert sample["image_name"].tolist() == [f"test_{n}" for n in range(12)]
    assert (sample["tags"] == "primary clear").all()
    truth = pd.read_csv(root / "test_truth.csv", dtype=str, keep_default_na=False)
    assert (truth["tags"].str.split().str.len() >= 1).all()


def test_pawpularity_has_kaggles_files_metadata_and_scores(layouts):
    root, summary = layouts["pawpularity"]
    assert sorted(p.name for p in root.iterdir()) == [
        "sample_submission.csv", "test", "test.csv", "test_truth.csv", "train", "train.csv", "train_boats.csv"]
    train, test = files(root / "train"), files(root / "test")
    assert pd.Series(train + test).str.fullmatch(r"[0-9a-f]{32}\.jpg").all()
    metadata = ["Subject Focus", "Eyes", "Face", "Near", "Action", "Accessory", "Group", "Collage", "Human",
                "Occlusion", "Info", "Blur"]
    labels = pd.read_csv(root / "train.csv", dtype={"Id": str})
    assert list(labels.columns) == ["Id", *metadata, "Pawpularity"]
    assert sorted(labels["Id"] + ".jpg") == train
    assert labels[metadata].isin([0, 1]).all().all() and labels[metadata].to_numpy().std(axis=0).max() > 0
    assert labels["Pawpularity"].dtype == np.int64 and labels["Pawpularity"].between(1, 100).all()
    assert labels["Pawpularity"].nunique() > 30  # a regression, even at n_train=60: the frames' scores differ
    assert sum(summary["class_counts"].values()) == 60 and list(summary["class_counts"])[-1] == "91-100"

    test_csv = pd.read_csv(root / "test.csv", dtype={"Id": str})
    assert list(test_csv.columns) == ["Id", *metadata]
    assert sorted(test_csv["Id"] + ".jpg") == test
    sample = pd.read_csv(root / "sample_submission.csv", dtype={"Id": str})
    assert list(sample.columns) == ["Id", "Pawpularity"] and (sample["Pawpularity"] == 50.0).all()
    assert sample["Id"].tolist() == test_csv["Id"].tolist()
    assert (root / "sample_submission.csv").read_text().split("\n")[1].endswith(",50.0")


def test_aptos_has_kaggles_files_and_grades(layouts):
    root, summary = layouts["aptos"]
    assert sorted(p.name for p in root.iterdir()) == [
        "sample_submission.csv", "test.csv", "test_images", "test_truth.csv", "train.csv", "train_boats.csv",
        "train_images"]
    train, test = files(root / "train_images"), files(root / "test_images")
    assert pd.Series(train + test).str.fullmatch(r"[0-9a-f]{12}\.png").all()
    assert {Image.open(p).size[0] == Image.open(p).size[1] for p in (root / "train_images").iterdir()} == {True}
    labels = pd.read_csv(root / "train.csv", dtype={"id_code": str})
    assert list(labels.columns) == ["id_code", "diagnosis"]
    assert sorted(labels["id_code"] + ".png") == train
    assert labels["diagnosis"].dtype == np.int64 and set(labels["diagnosis"]) == {0, 1, 2, 3, 4}
    assert summary["class_counts"] == {str(g): int((labels["diagnosis"] == g).sum()) for g in range(5)}
    test_csv = pd.read_csv(root / "test.csv", dtype=str)
    assert list(test_csv.columns) == ["id_code"] and sorted(test_csv["id_code"] + ".png") == test
    sample = pd.read_csv(root / "sample_submission.csv", dtype={"id_code": str})
    assert list(sample.columns) == ["id_code", "diagnosis"] and (sample["diagnosis"] == 0).all()
    assert sample["id_code"].tolist() == test_csv["id_code"].tolist()


def test_planet_tags_follow_planets_frequencies_and_each_is_visible(big):
    from sklearn.metrics import roc_auc_score

    from ncfm.synthetic import _looks

    root, summary = big["planet"]
    labels = pd.read_csv(root / "train_v2.csv").merge(
        pd.read_csv(root / "train_boats.csv").assign(image_name=lambda d: d["image"].str.extract(r"(train_\d+)")[0]))
    tags = labels["tags"].str.split()
    counts = summary["class_counts"]
    assert 0.85 <= counts["primary"] / 400 <= 0.95 and 0.6 <= counts["clear"] / 400 <= 0.8
    assert min(counts.values()) >= 10
    assert max(c for t, c in counts.items() if t not in ("primary", "clear")) <= 0.45 * 400
    assert tags.apply(lambda t: len(set(t) & {"clear", "cloudy", "haze", "partly_cloudy"})).max() == 1
    assert (tags[tags.apply(lambda t: "cloudy" in t)].str.len() == 1).all()
    assert labels["tags"].nunique() > len(counts)  # what tells a reader that these are tags, not classes
    for tag in counts:
        assert labels.loc[tags.apply(lambda t, tag=tag: tag in t), "boat"].nunique() >= 4, tag
    # each tag's object has its own hue: images with the tag show more of it than those without on the
    # same boat (whose deck and gear have their own share of that hue: the median without the tag)
    images = [bright_hues(root / "train-jpg" / f"{n}.jpg") for n in labels["image_name"]]
    boat = labels["boat"]
    for tag, look in _looks("planet", list(counts)).items():
        hue = colorsys.rgb_to_hsv(*(v / 255 for v in look.colours["back"]))[0]
        share = pd.Series([hue_share(x, hue) for x in images])
        has = tags.apply(lambda t, tag=tag: tag in t)
        both = has.groupby(boat).transform(lambda h: 0 < h.sum() < len(h))  # boats with and without the tag
        share -= boat.map(share[~has].groupby(boat[~has]).median())
        assert both.sum() >= 50 and roc_auc_score(has[both], share[both]) > 0.8, tag


def test_pawpularity_scores_look_like_kaggles_and_the_pet_shows_them(big):
    from ncfm.synthetic import PET_HUE

    root, summary = big["pawpularity"]
    labels = pd.read_csv(root / "train.csv", dtype={"Id": str})
    score = labels["Pawpularity"]
    assert score.nunique() > 30 and score.between(1, 100).all()
    assert 32 <= score.mean() <= 44 and 15 <= score.std() <= 25 and score.mean() > score.median()  # right-skewed
    assert summary["class_counts"] == {f"{lo}-{lo + 9}": int(score.between(lo, lo + 9).sum())
                                       for lo in range(1, 100, 10)}
    # the larger the (magenta) pet, the higher the score, but not exactly
    pet = [hue_share(bright_hues(root / "train" / f"{i}.jpg"), PET_HUE) for i in labels["Id"]]
    assert 0.5 < spearman(pet, score) < 0.97
    truth = pd.read_csv(root / "test_truth.csv", dtype={"Id": str})
    assert truth["Pawpularity"].between(1, 100).all() and len(truth) == 20


def test_aptos_grades_follow_aptos_balance_and_lesions_grow_with_the_grade(big):
    root, summary = big["aptos"]
    labels = pd.read_csv(root / "train.csv", dtype={"id_code": str})
    counts = labels["diagnosis"].value_counts()
    assert counts.min() >= 15 and counts.idxmax() == 0 and counts[2] > counts[1] and counts[4] > counts[3]
    assert summary["class_counts"]["0"] == counts[0]
    yellow = pd.Series([yellow_share(root / "train_images" / f"{i}.png") for i in labels["id_code"]])
    assert spearman(yellow, labels["diagnosis"]) > 0.5
    means = yellow.groupby(labels["diagnosis"]).mean()
    assert means.is_monotonic_increasing and means[0] < 0.2 * means[1]  # grade 0: no lesions
    # ordered: neighbouring grades look more alike than distant ones
    assert means[2] - means[1] < means[3] - means[1] < means[4] - means[1]


@pytest.mark.parametrize("layout", ["planet", "pawpularity", "aptos"])
def test_frames_of_a_video_are_near_duplicates_with_its_answer(layout):
    """Consecutive frames of a video differ less than two videos of the same boat, and share their
    tags or grade (Pawpularity: a score each, around the video's appeal)."""
    from io import BytesIO

    from ncfm.synthetic import _prepare, _render

    _, jobs, style, _ = _prepare(layout, 100, 5, None, 5, 0.1, 3, False, None, False)
    videos: dict[int, list] = {}
    for job in jobs:
        videos.setdefault(job[3], []).append(job)

    def pixels(job):
        return np.asarray(Image.open(BytesIO(_render(job, style)[0])).convert("RGB"), dtype=np.float32)

    within, across = [], []
    for frames in [v for v in videos.values() if len(v) >= 2][:12]:
        assert len({j[1] for j in frames}) == 1
        if layout != "pawpularity":
            assert len({j[2] for j in frames}) == 1
        first = pixels(frames[0])
        within.append(np.abs(first - pixels(frames[1])).mean())
        other = next(v[0] for v in videos.values() if v[0][1] == frames[0][1] and v[0][3] != frames[0][3])
        across.append(np.abs(first - pixels(other)).mean())
    assert np.median(within) < 0.8 * np.median(across)


def test_planet_vocabulary_always_holds_primary_and_clear():
    from ncfm.synthetic import PLANET_TAG_COUNTS, _answer_classes

    assert _answer_classes("planet", 2) == ["clear", "primary"]
    assert _answer_classes("planet", 17) == list(PLANET_TAG_COUNTS) == sorted(PLANET_TAG_COUNTS)
    for n in range(2, 18):
        tags = _answer_classes("planet", n)
        assert len(tags) == n and {"clear", "primary"} <= set(tags) and tags == sorted(tags)


def test_cli_writes_each_answer_layout_and_says_what_it_counted(tmp_path, capsys):
    for layout, said in (("planet", "images per tag: agriculture="),
                         ("pawpularity", "Pawpularity by ten points: 1-10="),
                         ("aptos", "images per diagnosis grade: 0=")):
        args = ["make_synthetic", str(tmp_path / layout), "--layout", layout, "--n-train", "30", "--n-test1", "3",
                "--boats", "5", "--scale", "0.03"]
        assert cli_main(args) == 0
        out = capsys.readouterr().out
        assert f"wrote 30 train ({said}" in out and f"in the {layout} layout" in out, out
