"""Crop sets: where a crop is cut, how true boxes are jittered, what a crop set's folder and per-fold
manifests hold, when it is reused or rebuilt, and that `train_fold` trains on it unchanged.

Images are small synthetic pictures: a grey background with a coloured rectangle where the fish is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ncfm import NcfmError
from ncfm.competition import NCFM_CLASSES as CLASSES
from ncfm.crops import (
    CropSettings,
    build_crop_set,
    crop_set_dir,
    crop_window,
    cut_crop,
    jitter_boxes,
    read_crop_set,
)

GREY, RED = (128, 128, 128), (220, 30, 30)
NAN_BOX = (math.nan,) * 4


def picture(width=100, height=80, box=(40, 30, 20, 20), colour=RED) -> np.ndarray:
    """A grey image with a `colour` rectangle at box (x, y, w, h)."""
    x = np.full((height, width, 3), GREY, np.uint8)
    bx, by, bw, bh = box
    x[by:by + bh, bx:bx + bw] = colour
    return x


# ----------------------------------------------------------------------------- geometry
def test_crop_at_a_box_holds_the_fish_in_the_centre_and_background_in_the_margin():
    window = crop_window((40, 30, 20, 20), (100, 80), margin=0.5)
    assert window == (30, 20, 70, 60)  # 10 px (half the 20 px side) on every side
    crop = cut_crop(picture(), window, size=40)
    assert crop.shape == (40, 40, 3) and crop.dtype == np.uint8
    assert tuple(crop[20, 20]) == RED
    assert tuple(crop[2, 2]) == GREY and tuple(crop[37, 37]) == GREY and tuple(crop[20, 2]) == GREY


def test_margin_is_a_fraction_of_the_longer_side_on_every_side():
    assert crop_window((40, 30, 20, 10), (100, 80), margin=0.25, aspect="keep") == (35, 25, 65, 45)


@pytest.mark.parametrize("aspect, window", [
    ("square", (40, 25, 60, 45)),  # the short side grown to 20, around the same centre
    ("keep", (40, 30, 60, 40)),
    ("pad", (40, 25, 60, 45)),  # square; inside the image, so nothing to pad
])
def test_aspect_modes(aspect, window):
    assert crop_window((40, 30, 20, 10), (100, 80), margin=0.0, aspect=aspect) == window


def test_keep_squashes_a_wide_box_into_the_square_crop():
    crop = cut_crop(picture(box=(20, 30, 60, 20)), crop_window((20, 30, 60, 20), (100, 80), 0.0, "keep"), size=30)
    assert (crop == RED).all()  # the whole 60x20 box fills the 30x30 crop


def test_small_fish_are_enlarged_smoothly():
    # a 2-pixel black/white edge enlarged 8 times: bilinear gives greys between (nearest would not)
    image = np.zeros((2, 2, 3), np.uint8)
    image[:, 1] = 255
    row = cut_crop(image, (0, 0, 2, 2), size=16)[8, :, 0]
    assert row[0] == 0 and row[-1] == 255 and ((row > 20) & (row < 235)).sum() >= 4


@pytest.mark.parametrize("aspect", ["square", "keep"])
def test_window_at_the_border_is_shifted_inside_the_image(aspect):
    # a 10 px box at the top-left corner with 5 px margins would start at (-5, -5)
    assert crop_window((0, 0, 10, 10), (100, 80), margin=0.5, aspect=aspect) == (0, 0, 20, 20)
    assert crop_window((90, 70, 10, 10), (100, 80), margin=0.5, aspect=aspect) == (80, 60, 100, 80)


def test_pad_keeps_the_box_centred_and_fills_outside_the_image_with_black():
    window = crop_window((0, 0, 10, 10), (100, 80), margin=0.5, aspect="pad")
    assert window == (-5, -5, 15, 15)
    crop = cut_crop(picture(box=(0, 0, 10, 10)), window, size=20)
    assert tuple(crop[1, 1]) == (0, 0, 0)  # outside the image
    assert tuple(crop[10, 10]) == RED and tuple(crop[18, 18]) == GREY


def test_box_sticking_out_of_the_image_is_clipped_before_the_margin():
    # only the 10x10 corner of this 20x20 box is in the image
    assert crop_window((90, 70, 20, 20), (100, 80), margin=0.0) == (90, 70, 100, 80)
    assert crop_window((-10, -10, 20, 20), (100, 80), margin=0.0, aspect="pad") == (0, 0, 10, 10)


def test_window_larger_than_the_image_is_clipped_to_it():
    assert crop_window((5, 5, 90, 70), (100, 80), margin=0.15) == (0, 0, 100, 80)  # 117 px square
    assert crop_window((10, 10, 70, 60), (100, 80), margin=0.15) == (0, 0, 91, 80)  # 91 wide: fits across


@pytest.mark.parametrize("aspect, window", [("square", (0, 0, 100, 80)), ("keep", (0, 0, 100, 80)),
                                            ("pad", (0, -10, 100, 90))])  # pad letterboxes the whole image
def test_no_detection_crops_the_whole_image(aspect, window):
    assert crop_window(NAN_BOX, (100, 80), margin=0.15, aspect=aspect) == window


def test_window_is_never_empty():
    x0, y0, x1, y1 = crop_window((50, 40, 0, 0), (100, 80), margin=0.15)
    assert x1 > x0 and y1 > y0
    x0, y0, x1, y1 = crop_window((150, 40, 10, 10), (100, 80), margin=0.15)  # wholly outside
    assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 80


def test_unknown_aspect_is_refused_naming_it():
    with pytest.raises(ValueError, match="aspect='round'"):
        crop_window((1, 1, 5, 5), (10, 10), aspect="round")


def test_jitter_stays_in_the_image_and_varies_within_its_bounds():
    rng = np.random.default_rng(0)
    boxes = np.array([[40, 30, 20, 10], [0, 0, 30, 30], [80, 60, 20, 20]], float)
    draws = np.stack([jitter_boxes(boxes, (100, 80), rng, scale=0.1, shift=0.1) for _ in range(200)])
    x, y, w, h = np.moveaxis(draws, -1, 0)
    assert (x >= 0).all() and (y >= 0).all() and (x + w <= 100).all() and (y + h <= 80).all()
    assert (w >= 1).all() and (h >= 1).all()
    # the box away from the border: size within +/-10%, centre within +/-10% of the size
    assert 18 <= w[:, 0].min() < 19 and 21 < w[:, 0].max() <= 22
    cx = x[:, 0] + w[:, 0] / 2
    assert 48 <= cx.min() < 49 and 51 < cx.max() <= 52
    assert len(np.unique(draws[:, 0], axis=0)) == 200


def test_jitter_is_fixed_by_the_random_generator():
    box = np.array([40, 30, 20, 10], float)
    a = jitter_boxes(box, (100, 80), np.random.default_rng(7))
    assert a.shape == (4,)
    np.testing.assert_array_equal(a, jitter_boxes(box, (100, 80), np.random.default_rng(7)))
    assert not np.array_equal(a, jitter_boxes(box, (100, 80), np.random.default_rng(8)))


# ----------------------------------------------------------------------------- a tiny data folder
# image -> (label, fold, its fish box or boxes, the fish's colour)
IMAGES = {
    "train/ALB/img_00001.jpg": ("ALB", 0, [(10, 10, 20, 16)], (230, 20, 20)),
    "train/ALB/img_00002.jpg": ("ALB", 1, [(30, 20, 24, 18)], (20, 230, 20)),
    "train/BET/img_00003.jpg": ("BET", 0, [(40, 8, 16, 24)], (20, 20, 230)),
    "train/BET/img_00004.jpg": ("BET", 1, [(4, 4, 16, 16), (44, 24, 16, 16)], (230, 230, 20)),
    "train/NoF/img_00005.jpg": ("NoF", 0, [], None),
    "train/NoF/img_00006.jpg": ("NoF", 1, [], None),
}
TEST = {"test_stg1/img_00101.jpg": (20, 12, 20, 20), "test_stg1/img_00102.jpg": (36, 20, 20, 16)}
SETTINGS = CropSettings(size=16, margin=0.1, jitters=2)


def make_folder(root: Path) -> dict:
    """Images (64x48 JPEGs), the manifest, true boxes and a detector's perfect found boxes."""
    for image, (_, _, boxes, colour) in IMAGES.items():
        pixels = np.full((48, 64, 3), GREY, np.uint8)
        for x, y, w, h in boxes:
            pixels[y:y + h, x:x + w] = colour
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / image, quality=95)
    for image, (x, y, w, h) in TEST.items():
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture(64, 48, (x, y, w, h), RED)).save(root / image, quality=95)
    manifest = pd.DataFrame([{"image": i, "label": v[0], "fold": v[1], "group": 10 + n}
                             for n, (i, v) in enumerate(IMAGES.items())])
    true = pd.DataFrame([{"image": i, "label": v[0], "x": x, "y": y, "width": w, "height": h,
                          "image_width": 64, "image_height": 48} for i, v in IMAGES.items() for x, y, w, h in v[2]])

    def found(images_boxes):
        rows = []
        for image, box in images_boxes:
            rows.append({"image": image, "rank": 0, "score": 0.0 if math.isnan(box[0]) else 0.9,
                         "x": box[0], "y": box[1], "width": box[2], "height": box[3]})
            # a second-best box, never used
            rows.append({"image": image, "rank": 1, "score": 0.1, "x": 0, "y": 0, "width": 5, "height": 5})
        return pd.DataFrame(rows)

    found_oof = {k: found([(i, v[2][0] if v[2] else NAN_BOX) for i, v in IMAGES.items() if v[1] == k])
                 for k in (0, 1)}
    found_test = {(1, k): found(list(TEST.items())) for k in (0, 1)}
    return {"data_dir": root, "manifest": manifest, "true_boxes": true, "found_oof": found_oof,
            "found_test": found_test}


def build(inputs: dict, settings=SETTINGS, **kwargs):
    return build_crop_set(inputs["data_dir"], "t", CLASSES, inputs["manifest"], inputs["true_boxes"],
                          inputs["found_oof"], inputs["found_test"], settings, workers=1, progress=False, **kwargs)


@pytest.fixture
def inputs(tmp_path) -> dict:
    return make_folder(tmp_path / "data")


def snapshot(folder: Path) -> dict:
    return {str(f.relative_to(folder)): f.stat().st_mtime_ns for f in folder.rglob("*") if f.is_file()}


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_crop_set_writes_every_crop_of_every_image(inputs):
    crops = build(inputs)
    assert crops.dir == crop_set_dir(inputs["data_dir"], "t", crops.digest)
    assert crops.dir.parent == inputs["data_dir"] / "crops"
    files = {str(f.relative_to(crops.dir)) for f in crops.dir.rglob("*.png")}
    true = {"true/img_00001_j0.png", "true/img_00001_j1.png", "true/img_00002_j0.png", "true/img_00002_j1.png",
            "true/img_00003_j0.png", "true/img_00003_j1.png",
            "true/img_00004_b0_j0.png", "true/img_00004_b0_j1.png",
            "true/img_00004_b1_j0.png", "true/img_00004_b1_j1.png"}
    oof = {f"oof/img_0000{i}.png" for i in (1, 2, 3, 4)}  # no NoF crops
    test = {f"test/stage1/fold{k}/img_0010{i}.png" for k in (0, 1) for i in (1, 2)}
    assert files == true | oof | test
    assert read_png(crops.dir / "true/img_00001_j0.png").shape == (16, 16, 3)
    assert crops.classes == ("ALB", "BET", "DOL", "LAG", "OTHER", "SHARK", "YFT")
    assert crops.counts["true"] == 10 and crops.counts["oof"] == 4


def test_each_crop_shows_its_own_images_fish(inputs):
    crops = build(inputs)
    for image, (_, _, boxes, colour) in IMAGES.items():
        stem = Path(image).stem
        if boxes:
            true_name = "true/img_00004_b1_j0.png" if len(boxes) > 1 else f"true/{stem}_j0.png"
            for name in (true_name, f"oof/{stem}.png"):
                centre = read_png(crops.dir / name)[8, 8].astype(int)
                assert np.abs(centre - colour).max() < 40, (name, centre, colour)
    centre = read_png(crops.dir / "test/stage1/fold1/img_00102.png")[8, 8].astype(int)
    assert np.abs(centre - RED).max() < 40


def test_jittered_crops_differ_from_the_exact_one(inputs):
    crops = build(inputs)
    exact, jittered = (read_png(crops.dir / f"true/img_00002_j{j}.png") for j in (0, 1))
    assert not np.array_equal(exact, jittered)


@pytest.mark.parametrize("fold", [0, 1])
def test_fold_manifest_validates_on_the_folds_oof_crops_and_trains_on_the_other_folds(inputs, fold):
    crops = build(inputs)
    m = pd.read_csv(crops.manifest(fold))
    assert list(m.columns) == ["image", "label", "fold", "group", "source", "rank", "score", "iou"]
    fish = [(i, v) for i, v in IMAGES.items() if v[0] != "NoF"]
    val = m[m.fold == fold]
    assert sorted(val.image) == sorted(f"oof/{Path(i).stem}.png" for i, v in fish if v[1] == fold)
    train = m[m.fold != fold]
    others = [(i, v) for i, v in fish if v[1] != fold]
    expected = {f"oof/{Path(i).stem}.png" for i, _ in others}
    expected |= {f for f in snapshot(crops.dir) if f.startswith("true/")
                 and any(f.startswith(f"true/{Path(i).stem}_") for i, _ in others)}
    assert set(train.image) == expected
    for row in m.itertuples():
        label, image_fold, _, _ = IMAGES[row.source]
        assert (row.label, row.fold) == (label, image_fold)
    assert set(m.fold) == {0, 1}


def test_the_classifier_trains_on_the_detectors_own_crops_with_their_true_labels(inputs):
    # fold 0's detector box misses img_00003's fish (a box in the corner)
    found = inputs["found_oof"][0]
    found.loc[(found.image == "train/BET/img_00003.jpg") & (found["rank"] == 0), ["x", "y", "width", "height"]] = \
        [0.0, 30.0, 12.0, 12.0]
    crops = build(inputs)
    train = pd.read_csv(crops.manifest(1))
    train = train[train.fold != 1]
    detector_crops = train[train.image.str.startswith("oof/")]
    fold0_fish = [i for i, v in IMAGES.items() if v[1] == 0 and v[0] != "NoF"]
    assert sorted(detector_crops.source) == sorted(fold0_fish)
    assert list(detector_crops.label) == [IMAGES[i][0] for i in detector_crops.source]  # the true labels
    missed = detector_crops[detector_crops.source == "train/BET/img_00003.jpg"]
    assert missed.iou.iloc[0] < 0.3 and (detector_crops.drop(missed.index).iou >= 0.3).all()
    # without misses: trained only on the crops that show the fish, still validated on every one
    hits_only = build(inputs, settings=dataclasses.replace(SETTINGS, train_misses=False))
    train = pd.read_csv(hits_only.manifest(1))
    assert "oof/img_00003.png" not in set(train.image[train.fold != 1])
    val = pd.read_csv(hits_only.manifest(0))
    assert "oof/img_00003.png" in set(val.image[val.fold == 0])


def with_a_sliver_first(found: pd.DataFrame) -> pd.DataFrame:
    """The detector's boxes with a better-scored sliver in front of each image's: a box outside the
    frame that clipping left 0 pixels wide."""
    sliver = found[found["rank"] == 0].assign(rank=0, score=0.95, x=64.0, y=10.0, width=0.0, height=20.0)
    return pd.concat([sliver, found.assign(rank=found["rank"] + 1)], ignore_index=True)


def test_degenerate_boxes_never_reach_a_crop(inputs):
    inputs["found_oof"] = {k: with_a_sliver_first(f) for k, f in inputs["found_oof"].items()}
    inputs["found_test"] = {k: with_a_sliver_first(f) for k, f in inputs["found_test"].items()}
    crops = build(inputs, settings=CropSettings(size=16, margin=0.1, jitters=2, top_boxes=3, box_floor=0.0))
    m = pd.read_csv(crops.manifest(0))
    assert not (m.score == 0.95).any(), "a sliver was cut"
    assert set(crops.test_crops(stage=1, fold=1).score) == {0.9, 0.1}
    centre = read_png(crops.dir / "test/stage1/fold1/img_00102.png")[8, 8].astype(int)
    assert np.abs(centre - RED).max() < 40  # the best crop is the true box behind the sliver


def test_an_image_whose_every_box_is_degenerate_is_cut_whole():
    from ncfm.crops import _top_boxes

    found = pd.DataFrame({"image": ["a.jpg", "a.jpg"], "rank": [0, 1], "score": [0.9, 0.5],
                          "x": [10.0, 3.0], "y": [0.0, 4.0], "width": [0.0, 30.0], "height": [5.0, 1.0]})
    (score, box), = _top_boxes(found, "found", top=2)["a.jpg"]
    assert score == 0.0 and all(math.isnan(v) for v in box)


def test_the_detector_drops_boxes_that_clip_to_slivers_before_ranking():
    from ncfm.detect import rank_boxes

    boxes = np.array([[120.0, 10, 30, 30], [10, 10, 20, 20], [0, 0, 0, 0], [40, 40, 10, 10]])
    conf = np.array([0.9, 0.6, -1.0, 0.3])  # the first lies past the 128-px frame's right edge but 8 px
    keep, clipped = rank_boxes(boxes, conf, size=128, max_boxes=5, min_score=0.01)
    assert list(keep) == [0, 1, 3]
    assert clipped[0].tolist() == [120.0, 10.0, 8.0, 30.0]
    boxes[0, 0] = 127.5  # now half a pixel wide inside the frame
    keep, _ = rank_boxes(boxes, conf, size=128, max_boxes=5, min_score=0.01)
    assert list(keep) == [1, 3]


def test_top_boxes_cuts_the_best_boxes_above_the_floor(inputs):
    crops = build(inputs, settings=CropSettings(size=16, margin=0.1, jitters=2, top_boxes=2, box_floor=0.05))
    listed = crops.test_crops(stage=1, fold=0)
    assert list(listed.crop) == ["test/stage1/fold0/img_00101.png", "test/stage1/fold0/img_00101_r1.png",
                                 "test/stage1/fold0/img_00102.png", "test/stage1/fold0/img_00102_r1.png"]
    assert list(listed.score) == [0.9, 0.1, 0.9, 0.1]
    assert (crops.dir / "oof/img_00001_r1.png").is_file()
    val = crops.validation_crops(0)
    assert set(val.source) == {i for i, v in IMAGES.items() if v[0] != "NoF" and v[1] == 0}
    floored = build(inputs, settings=CropSettings(size=16, margin=0.1, jitters=2, top_boxes=2, box_floor=0.2))
    assert list(floored.test_crops(stage=1, fold=0)["rank"]) == [0, 0]


def test_fold_manifest_is_accepted_by_read_manifest(inputs):
    from ncfm.folds import read_manifest

    crops = build(inputs)
    manifest, n_folds = read_manifest(crops.manifest(1), fold=1, classes=crops.classes)
    assert n_folds == 2 and (manifest.image.map(lambda i: (crops.dir / i).is_file())).all()


def test_crops_json_records_settings_classes_counts_and_test_ids_in_order(inputs):
    crops = build(inputs)
    meta = json.loads((crops.dir / "crops.json").read_text())
    assert meta["settings"]["size"] == 16 and meta["settings"]["aspect"] == "square"
    assert meta["digest"] == crops.digest and crops.dir.name == f"t-{crops.digest[:12]}"
    assert meta["test"] == {"1": {"folds": [0, 1], "images": list(TEST),
                                  "scores": {"0": [[0.9], [0.9]], "1": [[0.9], [0.9]]}}}
    listed = crops.test_crops(stage=1, fold=1)
    assert list(listed.image) == list(TEST)
    assert list(listed.crop) == ["test/stage1/fold1/img_00101.png", "test/stage1/fold1/img_00102.png"]
    assert list(listed["rank"]) == [0, 0] and list(listed.score) == [0.9, 0.9]
    assert read_crop_set(crops.dir) == crops


def test_same_inputs_reuse_the_crop_set_without_rewriting_it(inputs):
    first = build(inputs)
    before = snapshot(first.dir)
    again = build(inputs)
    assert again.dir == first.dir
    assert snapshot(again.dir) == before


def test_other_boxes_give_another_crop_set(inputs):
    first = build(inputs)
    inputs["true_boxes"].loc[0, "x"] += 2
    second = build(inputs)
    assert second.dir != first.dir and (first.dir / "crops.json").is_file() and (second.dir / "crops.json").is_file()
    other = build(inputs, settings=CropSettings(size=16, margin=0.1, jitters=2, aspect="pad"))
    assert other.dir not in (first.dir, second.dir)


def test_an_interrupted_build_is_rebuilt(inputs):
    crops = build(inputs)
    (crops.dir / "crops.json").unlink()
    (crops.dir / "oof/img_00003.png").unlink()
    with pytest.raises(NcfmError, match=r"crops\.json: not found.*ncfm train --detector"):
        read_crop_set(crops.dir)
    again = build(inputs)
    assert again.dir == crops.dir
    assert (crops.dir / "crops.json").is_file() and (crops.dir / "oof/img_00003.png").is_file()


def test_a_damaged_record_is_an_error_naming_it_and_is_rebuilt(inputs):
    crops = build(inputs)
    (crops.dir / "crops.json").write_text("{")
    with pytest.raises(NcfmError, match=r"crops\.json: not a valid crop set record.*ncfm train --detector"):
        read_crop_set(crops.dir)
    assert build(inputs) == crops


def test_parallel_cutting_writes_the_same_crops(inputs, tmp_path, monkeypatch):
    import ncfm.crops
    import ncfm.pool

    serial = build(inputs)
    os.rename(serial.dir, tmp_path / "serial")
    pools = []
    monkeypatch.setattr(ncfm.crops, "_CHUNK", 2)  # 6 source images: 3 tasks
    pool = ncfm.pool.process_pool
    monkeypatch.setattr(ncfm.pool, "process_pool", lambda n: pools.append(n) or pool(n))
    parallel = build_crop_set(inputs["data_dir"], "t", CLASSES, inputs["manifest"], inputs["true_boxes"],
                              inputs["found_oof"], inputs["found_test"], SETTINGS, workers=2, progress=False)
    assert pools == [2]
    assert snapshot(parallel.dir).keys() == snapshot(tmp_path / "serial").keys()
    for name in snapshot(tmp_path / "serial"):
        if name.endswith(".png"):
            np.testing.assert_array_equal(read_png(parallel.dir / name), read_png(tmp_path / "serial" / name), name)


def test_unreadable_image_is_an_error_naming_it(inputs):
    (inputs["data_dir"] / "train/BET/img_00003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(NcfmError, match=r"img_00003\.jpg: not an image"):
        build(inputs)


def test_oof_boxes_from_other_folds_are_refused(inputs):
    inputs["found_oof"][0], inputs["found_oof"][1] = inputs["found_oof"][1], inputs["found_oof"][0]
    with pytest.raises(NcfmError, match=r"found_oof\[0\]: .* is in fold 1 of the manifest"):
        build(inputs)


def test_a_fish_image_without_an_oof_box_row_is_refused(inputs):
    oof = inputs["found_oof"][1]
    inputs["found_oof"][1] = oof[oof.image != "train/BET/img_00004.jpg"]
    with pytest.raises(NcfmError, match=r"found_oof\[1\]: no box row for 1 fish image.*img_00004"):
        build(inputs)


def test_unknown_test_fold_is_an_error_naming_what_there_is(inputs):
    crops = build(inputs)
    with pytest.raises(NcfmError, match="stage=2, fold=0.*stage 1: folds 0, 1"):
        crops.test_crops(stage=2, fold=0)


def test_bad_settings_are_refused_naming_the_value():
    with pytest.raises(NcfmError, match="jitters=0"):
        CropSettings(jitters=0)
    with pytest.raises(NcfmError, match=r"top_boxes=0 \(1 or more\)"):
        CropSettings(top_boxes=0)
    with pytest.raises(NcfmError, match=r"box_floor=1.5 \(in \[0, 1\]\)"):
        CropSettings(box_floor=1.5)


# ----------------------------------------------------------------------------- training on it
@pytest.mark.slow
def test_train_fold_trains_a_crop_classifier_on_a_fold_manifest(inputs, tmp_path):
    from ncfm.competition import ncfm
    from ncfm.config import TrainConfig
    from ncfm.train import train_fold

    crops = build(inputs, settings=CropSettings(size=75, margin=0.1, jitters=2))
    cfg = TrainConfig(weights="none", image_size=75, epochs=1, head_epochs=1, batch_size=4, tensorboard=False,
                      workers=1)
    state = train_fold(cfg, crops.competition(ncfm()), crops.dir, crops.manifest(0), 0, tmp_path / "run")
    assert state["finished"]
    oof = pd.read_csv(tmp_path / "run/fold0/oof.csv")
    manifest = pd.read_csv(crops.manifest(0))
    assert list(oof.image) == list(manifest.image[manifest.fold == 0])
    assert list(oof.columns[2:]) == list(crops.classes)


def test_decoding_and_cutting_say_so_on_the_console(inputs, capsys):
    from ncfm import progress
    from ncfm.cache import load_images

    progress.configure()  # as the command layer does
    build(inputs)
    load_images(inputs["data_dir"], list(inputs["manifest"].image), 32, workers=1)
    out = capsys.readouterr().out
    assert re.search(rf"cutting \d+ crops from {len(inputs['manifest'])} images", out), out
    assert f"decoding {len(inputs['manifest'])} images at 32x32" in out, out
