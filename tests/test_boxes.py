"""boxes.py: the community's Sloth files -> boxes.csv; synthetic.py draws fish whose boxes it writes."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import write_image
from PIL import Image

from ncfm import NcfmError, competition
from ncfm.boxes import COLUMNS, boxes_path, import_boxes, read_boxes, write_boxes
from ncfm.cli import main as ncfm
from ncfm.synthetic import make_synthetic

CLASSES = list(competition.NCFM_CLASSES)


# ----------------------------------------------------------------------------- a tiny hand-made set
@pytest.fixture
def tiny(tmp_path):
    """Four 40x30 training images (two ALB, one BET, one NoF) and their manifest."""
    data = tmp_path / "data"
    images = ["train/ALB/img_00001.jpg", "train/ALB/img_00002.jpg", "train/BET/img_00003.jpg",
              "train/NoF/img_00004.jpg"]
    for image in images:
        write_image(data / image, size=(40, 30))
    manifest = pd.DataFrame({"image": images, "label": [p.split("/")[1] for p in images]})
    return data, manifest


def rect(x, y, w, h):
    return {"class": "rect", "x": x, "y": y, "width": w, "height": h}


def sloth(path, entries) -> object:
    """A Sloth file: entries as (filename, [annotation, ...]) or raw objects."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = [{"filename": e[0], "class": "image", "annotations": e[1]} if isinstance(e, tuple) else e for e in entries]
    path.write_text(json.dumps(data, indent=2))
    return path


def run(tiny, files: dict):
    """import_boxes over {file name: entries} written into DATA/boxes/."""
    data, manifest = tiny
    paths = [sloth(data / "boxes" / name, entries) for name, entries in files.items()]
    return import_boxes(data, paths, manifest, classes=CLASSES)


def as_tuples(df):
    return [tuple(r) for r in df[["image", "label", "x", "y", "width", "height"]].itertuples(index=False)]


def test_boxes_are_matched_by_base_name_with_the_file_naming_the_class(tiny):
    df, report = run(tiny, {"alb_labels.json": [("img_00001.jpg", [rect(1, 2, 10, 5)]),
                                                ("../data/train/ALB/img_00002.jpg", [rect(3.5, 4, 6, 7)])],
                            "BET_labels.json": [("C:\\kaggle\\train\\BET\\img_00003.jpg", [rect(0, 0, 5, 5)])]})
    assert list(df.columns) == COLUMNS
    assert as_tuples(df) == [("train/ALB/img_00001.jpg", "ALB", 1.0, 2.0, 10.0, 5.0),
                             ("train/ALB/img_00002.jpg", "ALB", 3.5, 4.0, 6.0, 7.0),
                             ("train/BET/img_00003.jpg", "BET", 0.0, 0.0, 5.0, 5.0)]
    assert (df["image_width"] == 40).all() and (df["image_height"] == 30).all()
    assert report["per_class"]["ALB"] == {"images": 2, "boxes": 2, "fish_images": 2, "without_box": 0}
    assert report["not_found"] == report["without_box"] == report["disagreeing"] == []


def test_boxes_sticking_out_are_clipped_and_empty_ones_dropped(tiny):
    df, report = run(tiny, {"alb_labels.json": [("img_00001.jpg", [
        rect(-5, -3, 10, 8),    # past the top-left corner
        rect(35, 25, 10, 10),   # past the bottom-right corner
        rect(50, 5, 10, 10),    # wholly outside: nothing left
        rect(39.5, 5, 4, 4),    # half a pixel left: thinner than a pixel
    ])]})
    assert as_tuples(df) == [("train/ALB/img_00001.jpg", "ALB", 0.0, 0.0, 5.0, 5.0),
                             ("train/ALB/img_00001.jpg", "ALB", 35.0, 25.0, 5.0, 5.0)]
    assert report["clipped"] == 2 and report["dropped_empty"] == 2


def test_the_same_box_twice_is_kept_once(tiny):
    twice = ("img_00001.jpg", [rect(1, 1, 5, 5), rect(1, 1, 5, 5), rect(2, 2, 5, 5)])
    df, report = run(tiny, {"alb_labels.json": [twice, ("img_00001.jpg", [rect(1, 1, 5, 5)])]})
    assert len(df) == 2 and report["duplicates"] == 2
    assert report["per_class"]["ALB"]["boxes"] == 2


def test_an_image_annotated_in_another_class_file_keeps_its_box_and_is_reported(tiny):
    df, report = run(tiny, {"alb_labels.json": [("img_00001.jpg", [rect(1, 1, 5, 5)])],
                            "bet_labels.json": [("img_00002.jpg", [rect(2, 2, 6, 6)]),
                                                ("img_00003.jpg", [rect(3, 3, 7, 7)])]})
    assert ("train/ALB/img_00002.jpg", "BET", 2.0, 2.0, 6.0, 6.0) in as_tuples(df)
    assert report["disagreeing"] == [{"image": "train/ALB/img_00002.jpg", "folder": "ALB",
                                      "file": "bet_labels.json", "label": "BET"}]


def test_unknown_file_names_are_listed_and_skipped(tiny):
    df, report = run(tiny, {"alb_labels.json": [("img_99999.jpg", [rect(1, 1, 5, 5)]),
                                                ("img_00001.jpg", [rect(1, 1, 5, 5)])]})
    assert report["not_found"] == ["img_99999.jpg"] and len(df) == 1


def test_fish_images_without_a_box_are_listed_but_nof_never(tiny):
    df, report = run(tiny, {"alb_labels.json": [("img_00001.jpg", [rect(1, 1, 5, 5)]), ("img_00002.jpg", [])],
                            "bet_labels.json": []})
    assert df["image"].tolist() == ["train/ALB/img_00001.jpg"]
    assert report["without_box"] == ["train/ALB/img_00002.jpg", "train/BET/img_00003.jpg"]
    assert report["per_class"]["BET"]["without_box"] == 1


def test_points_are_ignored_and_counted(tiny):
    point = {"class": "point", "x": 3, "y": 4}
    df, report = run(tiny, {"alb_labels.json": [("img_00001.jpg", [point, rect(1, 1, 5, 5), point])]})
    assert len(df) == 1 and report["ignored_annotations"] == {"point": 2}


def test_a_file_naming_no_competition_class_is_refused(tiny):
    with pytest.raises(NcfmError, match=r"tuna_labels\.json: names class 'TUNA'.*ALB, BET"):
        run(tiny, {"tuna_labels.json": [("img_00001.jpg", [rect(1, 1, 5, 5)])]})


@pytest.mark.parametrize("text, message", [
    ('[\n  {"filename": "img_00001.jpg",\n   "annotations": [}\n]', r"not valid JSON at line 3 column 20"),
    ('{"filename": "img_00001.jpg", "annotations": []}', r"expected a JSON list .* got a dict"),
    ("", "empty file"),
    ("  \n", "empty file"),
])
def test_unreadable_files_are_refused_naming_the_file_and_where(tiny, text, message):
    data, manifest = tiny
    path = data / "boxes" / "alb_labels.json"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(NcfmError, match=rf"alb_labels\.json: {message}"):
        import_boxes(data, [path], manifest, classes=CLASSES)


@pytest.mark.parametrize("entries, message", [
    ([("img_00001.jpg", [])], None),
    ([("img_00001.jpg", []), {"annotations": []}], r"entry 1: no \"filename\""),
    ([("img_00001.jpg", [{"class": "rect", "x": 1, "y": 1, "width": 3}])],
     r"entry 0 \(img_00001\.jpg\), annotation 0: missing height"),
    ([("img_00002.jpg", []), ("img_00001.jpg", [rect(1, 1, 5, 5), rect(1, "2", 5, 5)])],
     r"entry 1 \(img_00001\.jpg\), annotation 1: y='2' is not a number"),
    ([("img_00001.jpg", [rect(1, 1, None, 5)])], r"entry 0 \(img_00001\.jpg\), annotation 0: width=None is not a number"),
    ([("img_00001.jpg", {"x": 1})], r"entry 0 \(img_00001\.jpg\): \"annotations\" must be a list"),
])
def test_malformed_entries_are_refused_naming_the_file_and_the_entry(tiny, entries, message):
    if message is None:  # the well-formed start of each case passes
        run(tiny, {"alb_labels.json": entries})
        return
    with pytest.raises(NcfmError, match=r"alb_labels\.json: " + message):
        run(tiny, {"alb_labels.json": entries})


def test_boxes_csv_round_trips_and_a_damaged_one_names_the_fix(tiny, tmp_path):
    df, _ = run(tiny, {"alb_labels.json": [("img_00001.jpg", [rect(1.25, 2, 10, 5)])]})
    path = boxes_path(tmp_path / "data" / "folds.csv")
    assert path == tmp_path / "data" / "boxes.csv"
    write_boxes(df, path)
    pd.testing.assert_frame_equal(read_boxes(path, classes=CLASSES), df)
    path.write_text(path.read_text().replace("10.0", "ten"))
    with pytest.raises(NcfmError, match=r"boxes\.csv: line 2: width='ten'.*ncfm boxes"):
        read_boxes(path)
    path.write_text("image,label,x,y\n")
    with pytest.raises(NcfmError, match=r"boxes\.csv: missing columns \['width'.*ncfm boxes"):
        read_boxes(path)


# ----------------------------------------------------------------------------- the command
@pytest.fixture
def split(tiny):
    """The tiny set as split_train_val leaves it: folds.csv and competition.json."""
    data, manifest = tiny
    manifest.assign(fold=[0, 1, 0, 1], group=[0, 1, 2, 3]).to_csv(data / "folds.csv", index=False)
    competition.save(competition.ncfm(), competition.path_beside(data / "folds.csv"))
    return data


def test_cli_without_folds_csv_says_to_run_split_train_val(tiny, capsys):
    data, _ = tiny
    sloth(data / "boxes" / "alb_labels.json", [("img_00001.jpg", [rect(1, 1, 5, 5)])])
    assert ncfm(["boxes", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "folds.csv: folds manifest not found" in err and "ncfm split_train_val" in err
    assert not (data / "boxes.csv").exists()


def test_cli_without_box_files_says_where_it_looked_and_where_to_get_them(split, capsys):
    assert ncfm(["boxes", "--data-dir", str(split)]) == 2
    err = capsys.readouterr().err
    assert str(split / "boxes" / "*_labels.json") in err and "Kaggle" in err
    assert "put the Sloth *_labels.json files in" in err


def test_cli_refuses_to_overwrite_other_boxes_without_force(split, capsys):
    alb = sloth(split / "boxes" / "alb_labels.json", [("img_00001.jpg", [rect(1, 1, 5, 5)])])
    assert ncfm(["boxes", "--data-dir", str(split)]) == 0
    out = capsys.readouterr().out
    assert "ALB" in out and "boxes.csv: written (1 boxes on 1 images)" in out
    assert ncfm(["boxes", "--data-dir", str(split), str(alb)]) == 0  # same boxes: fine
    assert "boxes.csv: unchanged" in capsys.readouterr().out

    sloth(alb, [("img_00001.jpg", [rect(1, 1, 5, 5)]), ("img_00002.jpg", [rect(2, 2, 5, 5)])])
    assert ncfm(["boxes", "--data-dir", str(split)]) == 2
    err = capsys.readouterr().err
    assert f"{split / 'boxes.csv'}: exists with different boxes" in err and "--force" in err
    assert len(read_boxes(split / "boxes.csv")) == 1
    assert ncfm(["boxes", "--data-dir", str(split), "--force"]) == 0
    assert len(read_boxes(split / "boxes.csv")) == 2


# ----------------------------------------------------------------------------- synthetic fish boxes
@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """A synthetic NCFM set (400 training images at scale 0.1) with its Sloth files. Read-only."""
    root = tmp_path_factory.mktemp("drawn") / "data"
    summary = make_synthetic(root, n_train=400, n_test1=2, n_test2=2, scale=0.1, seed=5)
    return root, summary


def test_synthetic_writes_one_sloth_file_per_fish_class(drawn):
    root, summary = drawn
    assert sorted(p.name for p in (root / "boxes").iterdir()) == [
        "alb_labels.json", "bet_labels.json", "dol_labels.json", "lag_labels.json", "other_labels.json",
        "shark_labels.json", "yft_labels.json"]
    entries = json.loads((root / "boxes" / "alb_labels.json").read_text())
    assert set(entries[0]) == {"filename", "class", "annotations"}
    assert {a["class"] for e in entries for a in e["annotations"]} == {"rect"}
    # its flaws, for realism: all present
    assert summary["boxes"]["stick_out"] > 0 and summary["boxes"]["without_box"] > 0
    assert summary["boxes"]["prefixed"] > 0


def test_synthetic_boxes_import_as_one_box_per_drawn_fish(drawn):
    root, summary = drawn
    from ncfm.dataset import find_train_images

    manifest = find_train_images(root)
    df, report = import_boxes(root, sorted((root / "boxes").glob("*_labels.json")), manifest, classes=CLASSES)
    truth = summary["fish_boxes"]
    got = {image: sorted(map(tuple, g[["x", "y", "width", "height"]].to_numpy()))
           for image, g in df.groupby("image")}
    assert got == {image: sorted(truth[image]) for image in got}  # sticking-out boxes clipped back
    left_out = {image for image in truth if image not in got}
    assert len(left_out) == summary["boxes"]["without_box"] + sum(not b for b in truth.values())
    assert set(report["without_box"]) == left_out
    assert report["clipped"] == summary["boxes"]["stick_out"]
    assert report["not_found"] == report["disagreeing"] == [] and report["duplicates"] == 0
    sizes = {image: Image.open(root / image).size for image in got}
    assert (df[["image_width", "image_height"]].apply(tuple, axis=1) == df["image"].map(sizes)).all()


def test_synthetic_boxes_are_tight_around_the_fish_pixels(drawn):
    """Drawn losslessly with and without its fish, a frame differs exactly inside the boxes, and
    every box's edges touch the fish."""
    from ncfm.synthetic import _prepare, _render

    _, summary = drawn
    _, jobs, style, _ = _prepare("ncfm", 400, 2, 2, 12, 0.1, 5, False, None, False)
    lossless = dataclasses.replace(style, ext="png")
    fish_jobs = [j for j in jobs if j[0] in summary["fish_boxes"]][:40]
    two = 0
    for job in fish_jobs:
        with_fish, boxes = _render(job, lossless)
        without, _ = _render(job, lossless, with_fish=False)
        assert boxes == summary["fish_boxes"][job[0]]
        a, b = (np.asarray(Image.open(io.BytesIO(x)), np.int16) for x in (with_fish, without))
        fish = (a != b).any(axis=2)
        inside = np.zeros_like(fish)
        for x, y, w, h in boxes:
            x, y, w, h = int(x), int(y), int(w), int(h)
            inside[y: y + h, x: x + w] = True
            ys, xs = np.nonzero(fish[y: y + h, x: x + w])
            assert xs.min() <= 1 and ys.min() <= 1 and xs.max() >= w - 2 and ys.max() >= h - 2, (job[0], boxes)
        assert not (fish & ~inside).any(), job[0]
        two += len(boxes) == 2
    assert two > 0  # some frames hold two fish


def test_small_fish_gives_frames_four_times_larger_with_fish_covering_a_few_percent(tmp_path):
    kw = {"n_train": 80, "n_test1": 1, "n_test2": 1, "boats": 6, "scale": 0.1, "seed": 2}
    plain = make_synthetic(tmp_path / "plain", **kw)
    small = make_synthetic(tmp_path / "small", small_fish=True, **kw)
    for b, size in plain["boat_sizes"].items():
        w, h = map(int, size.split("x"))
        sw, sh = map(int, small["boat_sizes"][b].split("x"))
        assert abs(sw - 2 * w) <= 1 and abs(sh - 2 * h) <= 1  # each rounded on its own

    def cover(summary, root):
        return np.array([w * h / np.prod(Image.open(root / image).size)
                         for image, boxes in summary["fish_boxes"].items() for _, _, w, h in boxes])

    small_cover, plain_cover = cover(small, tmp_path / "small"), cover(plain, tmp_path / "plain")
    assert 0.01 <= np.median(small_cover) <= 0.03 and small_cover.max() < 0.05
    assert np.median(plain_cover) > 0.04
    assert any(len(b) == 2 for b in small["fish_boxes"].values())
    assert (tmp_path / "small" / "boxes" / "alb_labels.json").is_file()
