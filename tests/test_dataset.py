"""dataset.py: reading Kaggle's layout, test ids from the sample submissions, decode checks."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import write_image
from ncfm import NcfmError
from ncfm.competition import NCFM_CLASSES as CLASSES
from ncfm.cli import main as cli_main
from ncfm.dataset import check_images, find_test_images, find_train_images, read_sample_submission

HEADER = "image," + ",".join(CLASSES) + "\n"
ROW = "," + ",".join(["0.125"] * 8) + "\n"


def write_sample(root, stage, ids):
    (root / f"sample_submission_stg{stage}.csv").write_text(HEADER + "".join(i + ROW for i in ids))


# --------------------------------------------------------------------------- train
def test_train_images_are_relative_posix_paths_with_labels_sorted(kaggle_layout):
    root = kaggle_layout(per_class=2)
    df = find_train_images(root)
    assert list(df.columns) == ["image", "label"]
    assert len(df) == 16
    assert df["image"].tolist() == sorted(df["image"])
    assert df["image"].iloc[0] == "train/ALB/img_00000.jpg"
    assert all(img.split("/")[1] == label for img, label in zip(df["image"], df["label"]))


def test_image_extensions_are_case_insensitive(kaggle_layout):
    root = kaggle_layout(per_class=1)
    write_image(root / "train/BET/img_00900.JPG")
    write_image(root / "train/BET/img_00901.jpeg")
    write_image(root / "train/BET/img_00902.png", fmt="PNG")
    bet = find_train_images(root).query("label == 'BET'")["image"].tolist()
    assert bet == ["train/BET/img_00100.jpg", "train/BET/img_00900.JPG",
                   "train/BET/img_00901.jpeg", "train/BET/img_00902.png"]


def test_hidden_files_are_ignored(kaggle_layout):
    root = kaggle_layout(per_class=1)
    (root / "train/.DS_Store").write_bytes(b"\0\1")
    (root / "train/ALB/._img_00000.jpg").write_bytes(b"\0\1")
    (root / "train/ALB/.DS_Store").write_bytes(b"")
    assert len(find_train_images(root)) == 8


def test_missing_train_folder_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(NcfmError, match=r"train: no such folder; point --data-dir"):
        find_train_images(tmp_path)


def test_empty_train_folder_is_an_error(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(NcfmError, match="empty, no class folders"):
        find_train_images(tmp_path)


def test_class_folders_without_images_are_an_error(tmp_path):
    for c in CLASSES:
        (tmp_path / "train" / c).mkdir(parents=True)
    with pytest.raises(NcfmError, match="hold no images"):
        find_train_images(tmp_path)


def test_other_classes_than_ncfms_need_the_sample_submission(kaggle_layout):
    root = kaggle_layout(per_class=1)
    write_image(root / "train/TUNA/img_1.jpg")
    with pytest.raises(NcfmError, match=r"data: no sample submission \(sample_submission.csv"):
        find_train_images(root)


def test_a_class_folder_the_sample_has_no_column_for_is_named(kaggle_layout):
    root = kaggle_layout(per_class=1)
    write_sample(root, 1, ["img_00001.jpg"])
    write_image(root / "train/TUNA/img_1.jpg")
    with pytest.raises(NcfmError, match=r"sample_submission_stg1.csv: its class columns and the class folders .* "
                                        r"differ; class\(es\) TUNA have no column"):
        find_train_images(root)


def test_wrong_case_class_folder_gets_a_hint(kaggle_layout):
    root = kaggle_layout(per_class=1)
    write_sample(root, 1, ["img_00001.jpg"])
    (root / "train/SHARK").rename(root / "train/shark")
    with pytest.raises(NcfmError, match=r"'shark' should be 'SHARK'"):
        find_train_images(root)


def test_missing_class_folder_is_named(kaggle_layout):
    root = kaggle_layout(per_class=1)
    write_sample(root, 1, ["img_00001.jpg"])
    for p in (root / "train/LAG").iterdir():
        p.unlink()
    (root / "train/LAG").rmdir()
    with pytest.raises(NcfmError, match=r"no training images for column\(s\) LAG"):
        find_train_images(root)


def test_stray_file_in_train_is_named(kaggle_layout):
    root = kaggle_layout(per_class=1)
    write_image(root / "train/img_00777.jpg")
    with pytest.raises(NcfmError, match=r"train/img_00777.jpg: stray file in train/"):
        find_train_images(root)


# --------------------------------------------------------------------------- test ids
def test_stage1_ids_follow_the_sample_submission_order(tmp_path):
    for n in ("img_00005.jpg", "img_00001.jpg"):
        write_image(tmp_path / "test_stg1" / n)
    write_sample(tmp_path, 1, ["img_00005.jpg", "img_00001.jpg"])
    df, message = find_test_images(tmp_path, 1)
    assert df["id"].tolist() == ["img_00005.jpg", "img_00001.jpg"]
    assert df["path"].tolist() == ["test_stg1/img_00005.jpg", "test_stg1/img_00001.jpg"]
    assert "sample_submission_stg1.csv (2 rows)" in message


@pytest.mark.parametrize("nested", [False, True])
def test_stage2_ids_keep_their_prefix_and_nested_folder_is_found(tmp_path, nested):
    write_image(tmp_path / "test_stg1/img_00005.jpg")
    stg2 = tmp_path / ("test_stg2/test_stg2" if nested else "test_stg2")
    write_image(stg2 / "image_00001.jpg")
    write_sample(tmp_path, 2, ["img_00005.jpg", "test_stg2/image_00001.jpg"])
    df, _ = find_test_images(tmp_path, 2)
    assert df["id"].tolist() == ["img_00005.jpg", "test_stg2/image_00001.jpg"]
    expected = "test_stg2/test_stg2/image_00001.jpg" if nested else "test_stg2/image_00001.jpg"
    assert df["path"].tolist() == ["test_stg1/img_00005.jpg", expected]


def test_without_sample_submission_ids_come_from_the_listing_and_the_message_says_so(tmp_path):
    write_image(tmp_path / "test_stg1/img_00009.jpg")
    write_image(tmp_path / "test_stg1/img_00002.JPG")
    write_image(tmp_path / "test_stg2/test_stg2/image_00001.jpg")
    (tmp_path / "test_stg1/.DS_Store").write_bytes(b"")
    assert read_sample_submission(tmp_path, 2) is None
    df, message = find_test_images(tmp_path, 2)
    assert df["id"].tolist() == ["img_00002.JPG", "img_00009.jpg", "test_stg2/image_00001.jpg"]
    assert df["path"].iloc[-1] == "test_stg2/test_stg2/image_00001.jpg"
    assert "no sample_submission_stg2.csv" in message and "folder listing" in message


def test_sample_id_without_a_file_names_the_id_and_the_folders_searched(tmp_path):
    write_image(tmp_path / "test_stg1/img_00005.jpg")
    write_sample(tmp_path, 2, ["img_00005.jpg", "test_stg2/image_00042.jpg"])
    with pytest.raises(NcfmError, match=r"test_stg2/image_00042.jpg.*searched .*test_stg2/") as e:
        find_test_images(tmp_path, 2)
    assert "test_stg2/test_stg2/" in str(e.value)


def test_missing_test_folder_without_sample_is_an_error(tmp_path):
    from ncfm.competition import ncfm

    with pytest.raises(NcfmError, match="test_stg1: no such folder"):
        find_test_images(tmp_path, 1, ncfm(samples={}))
    with pytest.raises(NcfmError, match="train: no such folder; point --data-dir .* found nothing"):
        find_test_images(tmp_path, 1)


# --------------------------------------------------------------------------- decode checks
@pytest.fixture
def mixed_images(tmp_path):
    good = write_image(tmp_path / "good.jpg", size=(40, 24))
    png = write_image(tmp_path / "good.png", size=(10, 6), fmt="PNG")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(write_image(tmp_path / "big.jpg", size=(200, 120)).read_bytes()[:600])
    text = tmp_path / "text.jpg"
    text.write_text("<html>not found</html>")
    return [good, png, empty, truncated, text]


def test_check_images_reports_each_problem(mixed_images):
    df = check_images(mixed_images, workers=1, progress=False)
    assert df["ok"].tolist() == [True, True, False, False, False]
    assert df["error"].iloc[2] == "not a JPEG (0 bytes)"
    assert df["error"].iloc[3].startswith("truncated image")
    assert df["error"].iloc[4].startswith("not a JPEG (")
    assert (df["width"].iloc[0], df["height"].iloc[0]) == (40, 24)
    assert df["thumb"].iloc[0].shape == (18, 32, 3)
    assert df["thumb"].iloc[2] is None


def test_check_images_in_parallel_matches_serial(mixed_images):
    paths = mixed_images * 10
    serial = check_images(paths, workers=1, progress=False)
    parallel = check_images(paths, workers=2, progress=False)
    pd.testing.assert_frame_equal(serial.drop(columns="thumb"), parallel.drop(columns="thumb"))
    assert all((a is None and b is None) or (a == b).all() for a, b in zip(serial["thumb"], parallel["thumb"]))


# --------------------------------------------------------------------------- through the CLI
def run_split(root, *flags, capsys):
    code = cli_main(["split_train_val", "--data-dir", str(root), "--workers", "1", *flags])
    return code, capsys.readouterr()


def _claim_60000_square(path):
    """Rewrite the JPEG's frame header (SOF0) to say 60000 x 60000: PIL refuses it as a
    decompression bomb, an exception that is not an OSError."""
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = (60000).to_bytes(2, "big") * 2  # height, width
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, expected", [
    (lambda p: p.write_bytes(b""), "not a JPEG (0 bytes)"),
    (lambda p: p.write_bytes(p.read_bytes()[:300]), "truncated image"),
    (lambda p: p.write_text("Error 404"), "not a JPEG"),
    (_claim_60000_square, "cannot decode (DecompressionBombError"),
])
def test_bad_image_stops_split_with_exit_2_naming_the_file(kaggle_layout, capsys, damage, expected):
    root = kaggle_layout(per_class=3)
    bad = root / "train/BET/img_00101.jpg"
    write_image(bad, size=(300, 200))
    damage(bad)
    code, out = run_split(root, capsys=capsys)
    assert code == 2
    assert f"{bad}: {expected}" in out.err
    assert "remove it or pass --skip-bad" in out.err
    assert not (root / "folds.csv").exists()


@pytest.mark.parametrize("break_layout, expected", [
    (lambda r: write_image(r / "train/TUNA/img_1.jpg"), "class(es) TUNA have no column"),
    (lambda r: [p.unlink() for p in (r / "train/DOL").iterdir()] and (r / "train/DOL").rmdir(),
     "no training images for column(s) DOL"),
    (lambda r: write_image(r / "train/notes.jpg"), "train/notes.jpg: stray file"),
])
def test_broken_layout_exits_2_with_a_clear_message(kaggle_layout, capsys, break_layout, expected):
    root = kaggle_layout(per_class=3)
    write_sample(root, 1, ["img_00001.jpg"])
    break_layout(root)
    code, out = run_split(root, capsys=capsys)
    assert code == 2
    assert expected in out.err


def test_empty_train_exits_2(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    code, out = run_split(tmp_path, capsys=capsys)
    assert code == 2 and "empty" in out.err


def test_skip_bad_never_leaves_a_class_without_images(kaggle_layout, capsys):
    root = kaggle_layout(per_class=3)
    for image in (root / "train/LAG").iterdir():
        image.write_bytes(b"")
    code, out = run_split(root, "--skip-bad", "--groups", "none", "--folds", "2", capsys=capsys)
    assert code == 2
    assert f"no readable image left in {root / 'train' / 'LAG'}" in out.err
    assert not (root / "folds.csv").exists()


def test_skip_bad_lists_and_leaves_out_unreadable_images(kaggle_layout, capsys):
    root = kaggle_layout(per_class=3)
    (root / "train/BET/img_00101.jpg").write_bytes(b"")
    code, out = run_split(root, "--skip-bad", "--groups", "none", "--folds", "2", capsys=capsys)
    assert code == 0
    assert f"{root / 'train/BET/img_00101.jpg'}: not a JPEG (0 bytes)" in out.out
    folds = pd.read_csv(root / "folds.csv")
    assert len(folds) == 23 and "train/BET/img_00101.jpg" not in set(folds["image"])
    assert json.loads((root / "folds.json").read_text())["skipped"][0]["image"] == "train/BET/img_00101.jpg"


def test_dogs_vs_cats_labels_come_from_the_file_names(tmp_path, capsys):
    from ncfm import competition

    data = tmp_path / "data"
    for label in ("cat", "dog"):
        for i in range(6):
            write_image(data / "train" / f"{label}.{i}.jpg", colour=(200, 40, 40) if label == "cat" else (40, 40, 200))
    for i in range(1, 5):
        write_image(data / "test" / f"{i}.jpg")
    (data / "sample_submission.csv").write_text("id,label\n" + "".join(f"{i},0.5\n" for i in range(1, 5)))
    assert cli_main(["split_train_val", "--data-dir", str(data), "--folds", "2", "--groups", "none"]) == 0
    comp = competition.load(data / "competition.json")
    assert comp.classes == ("cat", "dog") and comp.kind == "binary" and comp.positive == "dog"
    assert comp.slug == competition.DOGS_VS_CATS_SLUG and comp.metric == "log_loss"
    assert comp.train == {"source": "names", "dir": "train"}
    assert "labels from the file names in train/" in capsys.readouterr().out
    folds = pd.read_csv(data / "folds.csv")
    assert sorted(folds.label.value_counts().items()) == [("cat", 6), ("dog", 6)]


@pytest.mark.parametrize("names", [["img_0001.jpg", "img_0002.jpg"], ["1.jpg", "2.jpg"], ["cat.1.jpg", "dog.2.jpg"]])
def test_names_that_do_not_carry_a_label_are_still_a_clear_error(tmp_path, names, capsys):
    for name in names:
        write_image(tmp_path / "train" / name)
    (tmp_path / "sample_submission.csv").write_text("id,label\n1,0.5\n")
    assert cli_main(["split_train_val", "--data-dir", str(tmp_path)]) == 2
    assert "the file names do not start with a label" in capsys.readouterr().err
