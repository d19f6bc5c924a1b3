"""Crop sets: the fish cut out of every image, as image files plus per-fold manifests that
`ncfm train` reads unchanged (the "crop" step of detect -> crop -> classify).

    crops = build_crop_set("data", "retina", comp.classes, manifest, true_boxes, found_oof, found_test,
                           CropSettings(size=299))
    train_fold(cfg, crops.competition(comp), crops.dir, crops.manifest(k), k, run_dir)
    crops.test_crops(stage=1, fold=k)   # source image, crop file (relative to crops.dir), in crops.json order

Inputs (DataFrames; this module reads no box files):
    manifest     folds.csv: image,label,fold[,group], image paths relative to the data folder
    true_boxes   boxes.csv: image,x,y,width,height (more columns allowed), original pixels, top-left origin
    found_oof    {fold k: the boxes detector fold k found on the training images it held out}
    found_test   {(stage, fold k): the boxes detector fold k found on that stage's test images}
                 found boxes: image,rank[,score],x,y,width,height; the best `top_boxes` are cut
                 (rank 0 always, the others only when they score at least `box_floor`); a box
                 thinner than MIN_CROP_SIDE pixels (clipped to a sliver at the frame's edge) is
                 never cut; NaN x,y,width,height (or no usable box) = no detection = the whole image.

A crop set is a folder, data/crops/<name>-<digest12>/ (crop_set_dir), keyed by a digest of
everything its files depend on: the settings, the classes, the manifest, every box used, and
each source image's byte size and mtime. The same inputs find the finished folder and do no
work; other boxes give another folder. Inside:

    true/<stem>_j<J>.png        J = 0..jitters-1 crops of each true box (j0 exact, j1.. jittered);
    true/<stem>_b<B>_j<J>.png   named by box B when the image has several boxes
    oof/<stem>[_r<R>].png       the crop at the detector's out-of-fold box of rank R (none: the best),
                                per fish image
    test/stage<S>/fold<k>/<stem>[_r<R>].png   the crop at detector fold k's box of rank R on a test image
    fold<k>.csv                 image,label,fold,group,source,rank,score,iou: what `train_fold(..., fold=k)`
                                reads. fold != k (training): true crops of the other folds' images and
                                their oof crops with their true labels, so that training, validation and
                                test crops come from the same detector (train_misses=False keeps only
                                the oof crops that show the fish, IoU >= HIT_IOU with a true box: on the
                                decoy stand-in that scored worse, 1.58 / 1.77 against 1.49 / 1.74 on the
                                test stages, as a missed crop still shows the boat, which the class
                                follows); fold == k (validation): every oof crop of fold k's images, i.e.
                                what the classifier will really see, misses included. `source` is the original
                                image; rank and score the box's; iou its best overlap with a true box
                                (NaN for true crops and for images without true boxes).
    crops.json                  settings, classes, digest, counts, test image ids per stage; written
                                last, so a folder without it is an unfinished build and is rebuilt.
    cache/                      later: train_fold's decoded-pixel cache of these crops

Classes listed in `without_boxes` (NoF) have no fish to crop: their images get no crops and the
crop set's classes are the competition's minus those. Each source image is decoded once (PIL,
full resolution) and all its crops are cut from it, in parallel over images.

Geometry (crop_window): a box (x, y, w, h) is clipped to the image, then grown by
margin * max(w, h) on every side; "square" then grows the shorter side to the longer (fish lie
at any angle) and "keep" leaves the box's aspect (the crop is later squashed to the square
input); both are shifted to lie inside the image, and clipped to it in a dimension where the
image is smaller than the window. "pad" is square and centred on the box, never shifted: pixels
outside the image are black. A NaN box (no detection) is the whole image with no margin (so
"pad" letterboxes it). Crops are resized to size x size with PIL's bilinear filter, which
averages when shrinking and interpolates smoothly when enlarging small fish (cache.py's BOX
filter would enlarge blockily).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import sys
import zlib
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import NcfmError
from ncfm.fileio import atomic_write_text

log = logging.getLogger(__name__)

CROP_VERSION = "crops-v2"  # the recipe (geometry, jitter draws, resize, file format); change it when they change
# a found box narrower or lower than this (original pixels, after clipping to the frame) is never cut
MIN_CROP_SIDE = 2.0
# an out-of-fold crop whose box overlaps a true box this much shows the fish (train_misses=False
# trains on these only)
HIT_IOU = 0.3
FORMAT = 1  # crops.json's layout
ASPECTS = ("square", "keep", "pad")
META = "crops.json"
_CHUNK = 8  # source images per task
_FIX = "rerun `ncfm train --detector RUN` (it cuts the crop set again)"


# ----------------------------------------------------------------------------- geometry
def crop_window(box_xywh, image_wh, margin: float = 0.15, aspect: str = "square") -> tuple[int, int, int, int]:
    """The pixel window (x0, y0, x1, y1), x1/y1 exclusive, to cut around box (x, y, w, h) in an
    image of image_wh = (width, height); margin and aspect as in the module docstring. Never
    empty; inside the image except with aspect="pad"."""
    if aspect not in ASPECTS:
        raise ValueError(f"received aspect={aspect!r}; use one of {', '.join(ASPECTS)}")
    width, height = image_wh
    x, y, w, h = (float(v) for v in box_xywh)
    if not all(math.isfinite(v) for v in (x, y, w, h)):  # no detection: the whole image
        x, y, w, h, margin = 0.0, 0.0, float(width), float(height), 0.0
    x0, x1 = min(max(x, 0.0), width), min(max(x + w, 0.0), width)
    y0, y1 = min(max(y, 0.0), height), min(max(y + h, 0.0), height)
    bw, bh = max(x1 - x0, 0.0), max(y1 - y0, 0.0)
    pad = margin * max(bw, bh)
    ww, wh = bw + 2 * pad, bh + 2 * pad
    if aspect != "keep":
        ww = wh = max(ww, wh)
    sw, sh = max(1, _round(ww)), max(1, _round(wh))
    left, top = _round((x0 + x1) / 2 - sw / 2), _round((y0 + y1) / 2 - sh / 2)
    if aspect != "pad":
        left, sw = _fit(left, sw, width)
        top, sh = _fit(top, sh, height)
    return left, top, left + sw, top + sh


def _round(v: float) -> int:
    return math.floor(v + 0.5)  # half up: Python's round() goes to even


def _fit(start: int, length: int, limit: int) -> tuple[int, int]:
    """Shift [start, start+length) inside [0, limit); clip it where it cannot fit."""
    if length >= limit:
        return 0, max(1, limit)
    return min(max(start, 0), limit - length), length


def jitter_boxes(boxes, image_wh, rng: np.random.Generator, scale: float = 0.1, shift: float = 0.1) -> np.ndarray:
    """Boxes (x, y, w, h), one or (N, 4), randomly perturbed like a detector's imperfect boxes:
    width and height each times 1 +/- scale, the centre moved by +/- shift of the box's width and
    height (uniform draws), then clipped to the image (at least 1 pixel wide and high)."""
    b = np.asarray(boxes, dtype=np.float64)
    flat = b.reshape(-1, 4)
    width, height = image_wh
    n = len(flat)
    w = flat[:, 2] * (1 + rng.uniform(-scale, scale, n))
    h = flat[:, 3] * (1 + rng.uniform(-scale, scale, n))
    cx = flat[:, 0] + flat[:, 2] / 2 + rng.uniform(-shift, shift, n) * flat[:, 2]
    cy = flat[:, 1] + flat[:, 3] / 2 + rng.uniform(-shift, shift, n) * flat[:, 3]
    x0, x1 = _clip_span(cx - w / 2, cx + w / 2, width)
    y0, y1 = _clip_span(cy - h / 2, cy + h / 2, height)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).reshape(b.shape)


def _clip_span(lo, hi, limit):
    lo, hi = np.clip(lo, 0, limit), np.clip(hi, 0, limit)
    hi = np.maximum(hi, np.minimum(lo + 1, limit))
    return np.minimum(lo, hi - 1).clip(0, None), hi


def cut_crop(image: np.ndarray, window, size: int) -> np.ndarray:
    """image[y0:y1, x0:x1] resized to (size, size, 3) uint8; window parts outside the image are black."""
    from PIL import Image

    return np.asarray(_cut(Image.fromarray(np.asarray(image, dtype=np.uint8)), window, size))


def _cut(img, window, size: int):
    from PIL import Image

    return img.crop(tuple(int(v) for v in window)).resize((size, size), Image.BILINEAR)


# ----------------------------------------------------------------------------- settings and the set
@dataclass(frozen=True)
class CropSettings:
    """How crops are cut. size: the crops' side in pixels (train at the same image_size to skip a
    second resize); margin, aspect: see crop_window; jitters: crops per true box (j0 exact);
    jitter_scale, jitter_shift: see jitter_boxes; seed: of the jitter draws; top_boxes: the
    detector's best boxes cut per image (out-of-fold and test); box_floor: the score a box below
    the best needs to be cut; train_misses: whether oof crops whose box misses every true fish
    are trained on (with the image's label), see the module docstring."""

    size: int = 299
    margin: float = 0.15
    aspect: str = "square"
    jitters: int = 4
    jitter_scale: float = 0.1
    jitter_shift: float = 0.1
    seed: int = 0
    top_boxes: int = 1
    box_floor: float = 0.0
    train_misses: bool = True

    def __post_init__(self):
        problems = [f"size={self.size} (a positive number of pixels)" if not self.size >= 1 else "",
                    f"margin={self.margin} (0 or more)" if not self.margin >= 0 else "",
                    f"aspect={self.aspect!r} (one of {', '.join(ASPECTS)})" if self.aspect not in ASPECTS else "",
                    f"jitters={self.jitters} (1 or more; 1 = the exact box only)" if not self.jitters >= 1 else "",
                    f"jitter_scale={self.jitter_scale} (in [0, 1))" if not 0 <= self.jitter_scale < 1 else "",
                    f"jitter_shift={self.jitter_shift} (0 or more)" if not self.jitter_shift >= 0 else "",
                    f"top_boxes={self.top_boxes} (1 or more)" if not self.top_boxes >= 1 else "",
                    f"box_floor={self.box_floor} (in [0, 1])" if not 0 <= self.box_floor <= 1 else ""]
        problems = [p for p in problems if p]
        if problems:
            raise NcfmError(f"crop settings: received {'; '.join(problems)}")


@dataclass(frozen=True)
class CropSet:
    """A finished crop set (from build_crop_set or read_crop_set)."""

    dir: Path
    name: str
    digest: str
    settings: CropSettings
    classes: tuple[str, ...]
    without_boxes: tuple[str, ...]
    folds: tuple[int, ...]
    counts: dict
    test_ids: dict  # stage -> tuple of source images (relative to the data folder), in order
    test_folds: dict  # stage -> tuple of detector folds with test crops
    test_boxes: dict = dataclasses.field(default_factory=dict)  # (stage, fold) -> {image: scores of its crops, best first}

    def manifest(self, fold: int) -> Path:
        """The manifest train_fold reads for `fold` (fold<k>.csv)."""
        if fold not in self.folds:
            raise NcfmError(f"received fold={fold}, but the crop set {self.dir} has folds "
                            f"{', '.join(map(str, self.folds))}")
        return self.dir / f"fold{fold}.csv"

    def validation_crops(self, fold: int) -> pd.DataFrame:
        """The crops `fold` validates on (its images' out-of-fold crops): image (the crop), source,
        rank, score; the scores weigh an image's crops when they are combined (combine_boxes)."""
        rows = pd.read_csv(self.manifest(fold), dtype={"image": str, "source": str})
        rows = rows[rows.fold == fold]
        if "score" not in rows:  # a set cut before scores were recorded: its one crop per image
            rows = rows.assign(rank=0, score=1.0)
        return rows[["image", "source", "rank", "score"]].reset_index(drop=True)

    def test_crops(self, stage: int, fold: int) -> pd.DataFrame:
        """Detector fold `fold`'s crops of stage `stage`'s test images: columns image (the source,
        as the detector named it), crop (relative to self.dir), rank and score, the images in
        crops.json's order, each image's crops best first."""
        if fold not in self.test_folds.get(stage, ()):
            have = "; ".join(f"stage {s}: folds {', '.join(map(str, f))}" for s, f in sorted(self.test_folds.items()))
            raise NcfmError(f"received stage={stage}, fold={fold}: {self.dir} has no test crops for it "
                            f"(it has {have or 'none'}); rerun `ncfm train --detector RUN` after `ncfm detect --test` wrote that "
                            f"detector fold's test boxes")
        boxes = self.test_boxes.get((stage, fold))
        if boxes is None:  # one crop per image
            ids = list(self.test_ids[stage])
            return pd.DataFrame({"image": ids, "crop": [_test_name(stage, fold, _stem(i)) for i in ids],
                                 "rank": 0, "score": 1.0})
        return pd.DataFrame([{"image": i, "crop": _test_name(stage, fold, _stem(i), r), "rank": r, "score": sc}
                             for i in self.test_ids[stage] for r, sc in enumerate(boxes[i])])

    def competition(self, comp):
        """comp with the crop set's classes: what train_fold is given to train on these crops."""
        missing = sorted(set(self.classes) - set(comp.classes))
        if missing:
            raise NcfmError(f"{self.dir / META}: classes {missing} are not the competition's "
                            f"({', '.join(comp.classes)}); {_FIX}")
        columns = self.classes if comp.kind == "probabilities" else comp.columns
        return dataclasses.replace(comp, classes=self.classes, columns=columns)


def crop_set_dir(data_dir, name: str, digest: str) -> Path:
    """Where the crop set `name` with this digest lives: <data_dir>/crops/<name>-<digest[:12]>/."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise NcfmError(f"received crop set name={name!r}; use letters, digits, '.', '_' or '-' (a folder name)")
    return Path(data_dir) / "crops" / f"{name}-{digest[:12]}"


# one place spells the file names inside a crop set
def _stem(image: str) -> str:
    return Path(image).stem


def _true_name(stem: str, box: int, jitter: int, several: bool) -> str:
    return f"true/{stem}_b{box}_j{jitter}.png" if several else f"true/{stem}_j{jitter}.png"


def _oof_name(stem: str, rank: int = 0) -> str:
    return f"oof/{stem}_r{rank}.png" if rank else f"oof/{stem}.png"


def _test_name(stage: int, fold: int, stem: str, rank: int = 0) -> str:
    return f"test/stage{stage}/fold{fold}/{stem}_r{rank}.png" if rank else f"test/stage{stage}/fold{fold}/{stem}.png"


# ----------------------------------------------------------------------------- planning (pure)
@dataclass
class _Plan:
    tasks: dict  # source image -> [(crop file, (x, y, w, h), (box, jitter) or None)]
    rows: pd.DataFrame  # every training crop: image,label,fold,group,source,kind
    test_ids: dict  # stage -> source images, in order
    test_folds: dict  # stage -> detector folds
    counts: dict
    classes: tuple  # the crop set's
    folds: list
    test_boxes: dict  # (stage, fold) -> {image: scores of its crops, best first}


def _columns(df: pd.DataFrame, needed: tuple, what: str, fix: str) -> pd.DataFrame:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise NcfmError(f"{what}: missing columns {missing}; expected {','.join(needed)}; {fix}")
    return df


def _top_boxes(found: pd.DataFrame, what: str, top: int = 1, floor: float = 0.0) -> dict[str, list[tuple]]:
    """{image: [(score, (x, y, w, h)), ...]} of a detector's found boxes, best first: boxes thinner
    than MIN_CROP_SIDE dropped, then the best `top`, those after the first only when they score at
    least `floor`. An image without a usable box gets [(0.0, NaN box)]: the whole image."""
    _columns(found, ("image", "rank", "x", "y", "width", "height"), what, "pass the detector's found boxes")
    best = found[found["rank"] == 0]
    twice = best.image[best.image.duplicated()]
    if len(twice):
        raise NcfmError(f"{what}: {len(twice)} image(s) have several rank-0 boxes (e.g. {twice.iloc[0]}); "
                        f"each image needs exactly one best box")
    found = found.assign(score=found["score"].astype("float64") if "score" in found else 1.0)
    xywh = found[["x", "y", "width", "height"]].to_numpy("float64")
    usable = np.isfinite(xywh).all(axis=1) & (xywh[:, 2] >= MIN_CROP_SIDE) & (xywh[:, 3] >= MIN_CROP_SIDE)
    order = np.lexsort((found["rank"].to_numpy(), found["image"].to_numpy()))
    out: dict[str, list[tuple]] = {}
    for i in order:
        picked = out.setdefault(found["image"].iat[i], [])
        score = float(found["score"].iat[i])
        if usable[i] and len(picked) < top and (not picked or score >= floor):
            picked.append((score, tuple(float(v) for v in xywh[i])))
    nothing = (0.0, (math.nan,) * 4)
    return {image: picked or [nothing] for image, picked in out.items()}


def _box(row) -> tuple:
    return tuple(float(v) for v in row)


def _unique_stems(images, what: str) -> None:
    seen = {}
    for image in images:
        other = seen.setdefault(_stem(image), image)
        if other != image:
            raise NcfmError(f"{what}: {other} and {image} have the same file name stem, and crops are named by "
                            f"it; rename one of them")


def _plan(classes, manifest, true_boxes, found_oof, found_test, settings: CropSettings, without_boxes) -> _Plan:
    _columns(manifest, ("image", "label", "fold"), "manifest", "pass folds.csv as read by ncfm.batches.read_manifest")
    _columns(true_boxes, ("image", "x", "y", "width", "height"), "true boxes", "pass boxes.csv (ncfm boxes)")
    crop_classes = tuple(c for c in classes if c not in without_boxes)
    if len(crop_classes) < 2:
        raise NcfmError(f"crop classes {list(crop_classes)}: the competition's classes {list(classes)} minus "
                        f"without_boxes {list(without_boxes)} leave fewer than 2 to classify")
    unknown = sorted(set(manifest.label) - set(classes))
    if unknown:
        raise NcfmError(f"manifest: unknown labels {unknown[:10]}; the competition's classes are {', '.join(classes)}")
    folds = sorted(int(f) for f in manifest.fold.unique())
    found_oof = {int(k): v for k, v in found_oof.items()}
    found_test = {(int(s), int(k)): v for (s, k), v in (found_test or {}).items()}
    if sorted(found_oof) != folds:
        raise NcfmError(f"found_oof has detector folds {sorted(found_oof)}, the manifest folds {folds}: every fold's "
                        f"out-of-fold boxes are needed (run `ncfm detect` for each fold)")
    fish = manifest[~manifest.label.isin(without_boxes)].reset_index(drop=True)
    _unique_stems(fish.image, "manifest")

    # the detector's folds must be the manifest's, or a fold would validate on crops its detector trained on
    oof = {k: _top_boxes(found_oof[k], f"found_oof[{k}]", settings.top_boxes, settings.box_floor) for k in folds}
    fold_of = dict(zip(fish.image, fish.fold.astype(int)))
    for k, best in oof.items():
        strays = [i for i in best if i in fold_of and fold_of[i] != k]
        if strays:
            raise NcfmError(f"found_oof[{k}]: {strays[0]} is in fold {fold_of[strays[0]]} of the manifest, not {k} "
                            f"({len(strays)} such images): the detector was trained on other folds; train it on "
                            f"this folds.csv")
        lacking = sorted(set(fish.image[fish.fold == k]) - set(best))
        if lacking:
            raise NcfmError(f"found_oof[{k}]: no box row for {len(lacking)} fish image(s) of fold {k} (e.g. "
                            f"{lacking[0]}); an image without a detection needs a rank-0 row with NaN box; "
                            f"re-run `ncfm detect --fold {k}`")

    true = true_boxes[true_boxes.image.isin(set(fish.image))]
    true_by_image = {i: df[["x", "y", "width", "height"]].astype("float64").to_numpy()
                     for i, df in true.groupby("image", sort=False)}
    from ncfm.boxes import iou

    tasks: dict = {}
    rows = []
    group = "group" in manifest.columns
    nan = float("nan")
    for r in fish.itertuples(index=False):
        stem, boxes = _stem(r.image), true_by_image.get(r.image, np.zeros((0, 4)))
        crops = tasks.setdefault(r.image, [])
        base = dict(label=r.label, fold=int(r.fold), **({"group": r.group} if group else {}), source=r.image)
        for b, box in enumerate(boxes):
            for j in range(settings.jitters):
                name = _true_name(stem, b, j, len(boxes) > 1)
                crops.append((name, _box(box), (b, j) if j else None))
                rows.append(dict(image=name, **base, kind="true", rank=nan, score=nan, iou=nan))
        for rank, (score, box) in enumerate(oof[int(r.fold)][r.image]):
            name = _oof_name(stem, rank)
            crops.append((name, box, None))
            overlap = float(iou(np.asarray(box), boxes).max()) if len(boxes) else nan
            rows.append(dict(image=name, **base, kind="oof", rank=rank, score=score, iou=overlap))

    test_ids, test_folds, test_boxes = {}, {}, {}
    for stage, fold in sorted(found_test):
        best = _top_boxes(found_test[stage, fold], f"found_test[{stage}, {fold}]", settings.top_boxes,
                          settings.box_floor)
        if stage not in test_ids:
            test_ids[stage] = tuple(best)
            _unique_stems(test_ids[stage], f"found_test[{stage}, {fold}]")
        elif set(best) != set(test_ids[stage]):
            first = test_folds[stage][0]
            diff = sorted(set(best.index) ^ set(test_ids[stage]))
            raise NcfmError(f"found_test[{stage}, {fold}] and found_test[{stage}, {first}] name different test images "
                            f"(e.g. {diff[0]}, {len(diff)} in all); every detector fold must box the same images")
        test_folds.setdefault(stage, []).append(fold)
        test_boxes[stage, fold] = {image: [score for score, _ in best[image]] for image in test_ids[stage]}
        for image in test_ids[stage]:
            for rank, (_, box) in enumerate(best[image]):
                tasks.setdefault(image, []).append((_test_name(stage, fold, _stem(image), rank), box, None))

    rows = pd.DataFrame(rows, columns=["image", "label", "fold", *(["group"] if group else []), "source", "kind",
                                       "rank", "score", "iou"])
    with_boxes = set(true_by_image)
    counts = {"source_images": len(tasks), "fish_images": len(fish),
              "fish_images_without_true_boxes": int((~fish.image.isin(with_boxes)).sum()),
              "true": int((rows.kind == "true").sum()), "oof": int((rows.kind == "oof").sum()),
              "oof_hits": int(((rows.kind == "oof") & (rows.iou >= HIT_IOU)).sum()),
              "test": {str(s): len(ids) for s, ids in test_ids.items()}}
    return _Plan(tasks, rows, test_ids, {s: tuple(f) for s, f in test_folds.items()}, counts, crop_classes, folds,
                 test_boxes)


def _fold_manifest(rows: pd.DataFrame, fold: int, train_misses: bool = True) -> pd.DataFrame:
    """fold != k: true crops of the other folds' images and their oof crops (without train_misses,
    only those that show the fish: IoU >= HIT_IOU with a true box, or the best box of an image
    without true boxes); fold == k: every oof crop of its images, misses included (what the
    classifier will see on test images)."""
    oof = rows.kind == "oof"
    shows_fish = (rows.iou >= HIT_IOU) | (rows.iou.isna() & (rows["rank"] == 0)) if not train_misses else oof
    keep = (oof & (rows.fold == fold)) | ((rows.fold != fold) & (~oof | shows_fish))
    return rows[keep].drop(columns="kind")


def _digest(data_dir, plan: _Plan, settings: CropSettings, classes, without_boxes) -> str:
    """sha256 of everything the crop set's files depend on (the folder's location excluded)."""
    h = hashlib.sha256(json.dumps({"recipe": CROP_VERSION, "settings": dataclasses.asdict(settings),
                                   "classes": list(classes), "without_boxes": list(without_boxes)},
                                  sort_keys=True).encode())
    h.update(plan.rows.to_csv(index=False).encode())
    h.update(json.dumps({str(s): list(ids) for s, ids in plan.test_ids.items()}).encode())
    data_dir = Path(data_dir)
    for image, crops in plan.tasks.items():
        try:
            st = os.stat(data_dir / image)
            h.update(f"{image}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{image}\tmissing\n".encode())
        h.update(repr(crops).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- building
def build_crop_set(data_dir, name: str, classes, manifest: pd.DataFrame, true_boxes: pd.DataFrame,
                   found_oof: dict, found_test: dict | None = None, settings: CropSettings | None = None,
                   without_boxes=("NoF",), workers: int = 0, progress: bool = True) -> CropSet:
    """Cut (or find, when these inputs were cut before) the crop set `name` in
    <data_dir>/crops/; see the module docstring. classes: the competition's, in order."""
    settings = settings or CropSettings()
    classes, without_boxes = tuple(classes), tuple(without_boxes)
    plan = _plan(classes, manifest, true_boxes, found_oof, found_test, settings, without_boxes)
    digest = _digest(data_dir, plan, settings, classes, without_boxes)
    out = crop_set_dir(data_dir, name, digest)
    meta_path = out / META
    crops = _finished(out, digest)
    if crops is not None:
        log.info("crop set found: %s (%d true, %d oof crops)", out, crops.counts["true"], crops.counts["oof"])
        return crops
    if meta_path.exists():
        meta_path.unlink()  # a damaged record: this build must finish before the folder counts again
    _cut_all(Path(data_dir), out, plan.tasks, settings, workers, progress)
    for k in plan.folds:
        atomic_write_text(out / f"fold{k}.csv", _fold_manifest(plan.rows, k, settings.train_misses).to_csv(index=False))
    if hasattr(os, "sync"):
        os.sync()  # the crops reach the disk before the record that says they are there
    meta = {"format": FORMAT, "recipe": CROP_VERSION, "name": name, "digest": digest,
            "settings": dataclasses.asdict(settings), "classes": list(plan.classes),
            "without_boxes": list(without_boxes), "folds": plan.folds, "counts": plan.counts,
            "test": {str(s): {"folds": list(plan.test_folds[s]), "images": list(ids),
                              "scores": {str(k): [plan.test_boxes[s, k][i] for i in ids] for k in plan.test_folds[s]}}
                     for s, ids in plan.test_ids.items()}}
    atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")  # last: it marks the set finished
    if plan.counts["fish_images_without_true_boxes"]:
        log.warning("%d fish image(s) have no true box: they give oof crops only",
                    plan.counts["fish_images_without_true_boxes"])
    log.info("crop set written: %s (%d true, %d oof, %d test crops from %d images)", out, plan.counts["true"],
             plan.counts["oof"], sum(len(sc) for b in plan.test_boxes.values() for sc in b.values()),
             plan.counts["source_images"])
    return read_crop_set(out)


def add_test_crops(crops: CropSet, data_dir, stage: int, found_test: dict, workers: int = 0,
                   progress: bool = True) -> CropSet:
    """The crop set with the test crops of one stage cut again from `found_test` ({detector fold k:
    its boxes on the stage's test images}), for test images other than those it was cut with (a new
    stage, or a Kaggle notebook's hidden test set). The training crops are untouched; crops.json's
    record of that stage is replaced last, so an interrupted cut leaves the old record."""
    best = {int(k): _top_boxes(found, f"found_test[{stage}, {k}]", crops.settings.top_boxes, crops.settings.box_floor)
            for k, found in found_test.items()}
    images = tuple(next(iter(best.values()))) if best else ()
    _unique_stems(images, f"found_test[{stage}]")
    tasks: dict = {}
    for k, boxes in sorted(best.items()):
        if set(boxes) != set(images):
            raise NcfmError(f"found_test[{stage}, {k}]: names other test images than the first detector fold; "
                            f"every detector fold must box the same images")
        for image in images:
            for rank, (_, box) in enumerate(boxes[image]):
                tasks.setdefault(image, []).append((_test_name(stage, k, _stem(image), rank), box, None))
    _cut_all(Path(data_dir), crops.dir, tasks, crops.settings, workers, progress)
    meta_path = crops.dir / META
    meta = json.loads(meta_path.read_text())
    meta["test"][str(stage)] = {"folds": sorted(best), "images": list(images),
                                "scores": {str(k): [[s for s, _ in best[k][i]] for i in images] for k in sorted(best)}}
    meta["counts"].setdefault("test", {})[str(stage)] = len(images)
    atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")
    log.info("test crops of stage %d cut again: %d images x %d detector folds in %s", stage, len(images), len(best),
             crops.dir)
    return read_crop_set(crops.dir)


def _finished(out: Path, digest: str) -> CropSet | None:
    """The crop set in `out` if a build with this digest finished there."""
    try:
        crops = read_crop_set(out)
    except NcfmError:
        return None
    return crops if crops.digest == digest else None


def _cut_all(data_dir: Path, out: Path, tasks: dict, settings: CropSettings, workers: int, progress: bool) -> None:
    from tqdm import tqdm

    from ncfm.pool import cpu_count, process_pool

    for folder in sorted({str(Path(c[0]).parent) for crops in tasks.values() for c in crops}):
        (out / folder).mkdir(parents=True, exist_ok=True)
    jobs = list(tasks.items())
    chunks = [jobs[s: s + _CHUNK] for s in range(0, len(jobs), _CHUNK)]
    workers = cpu_count() if workers <= 0 else workers
    workers = min(workers, max(1, len(chunks)))
    n_crops = sum(len(c) for c in tasks.values())
    log.info("cutting %d crops from %d images into %s (%d workers)", n_crops, len(jobs), out, workers)
    args = (str(data_dir), str(out), dataclasses.asdict(settings))
    failures = []
    with tqdm(total=len(jobs), desc="cutting crops", unit="img",
              disable=not progress or not sys.stderr.isatty()) as bar:
        if workers == 1:
            for chunk in chunks:
                failures += _cut_images(chunk, *args)
                bar.update(len(chunk))
        else:
            with process_pool(workers) as pool:
                futures = {pool.submit(_cut_images, chunk, *args): len(chunk) for chunk in chunks}
                for fut in as_completed(futures):
                    failures += fut.result()
                    bar.update(futures[fut])
    if failures:
        lines = [f"{data_dir / image}: {error}" for image, error in sorted(failures)]
        raise NcfmError(f"{len(lines)} unreadable image(s); replace them, or leave them out of the manifest and "
                        f"the boxes, then rerun `ncfm train --detector RUN`:\n  " + "\n  ".join(lines))


def _cut_images(jobs: list, data_dir: str, out: str, settings: dict) -> list[tuple[str, str]]:
    """Decode each source image once and write all its crops; return (image, error) for unreadable ones."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a short file must fail, not decode as grey
    s = CropSettings(**settings)
    failures = []
    for image, crops in jobs:
        path = os.path.join(data_dir, image)
        try:
            with Image.open(path) as opened:
                img = opened.convert("RGB")
        except FileNotFoundError:
            failures.append((image, "file not found"))
            continue
        except UnidentifiedImageError:
            failures.append((image, f"not an image ({os.path.getsize(path)} bytes)"))
            continue
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
            failures.append((image, f"cannot decode ({type(e).__name__}: {e})"))
            continue
        for name, box, jitter in crops:
            if jitter is not None:  # its own stream: the same crop whatever the order or the worker
                rng = np.random.default_rng([s.seed, zlib.crc32(image.encode()), *jitter])
                box = jitter_boxes(box, img.size, rng, s.jitter_scale, s.jitter_shift)
            window = crop_window(box, img.size, s.margin, s.aspect)
            # compress_level 1: a third of the default's time, files ~10% larger
            _cut(img, window, s.size).save(os.path.join(out, name), compress_level=1)
    return failures


def copy_record(crops: CropSet, dest) -> list[Path]:
    """The crop set's record, without its images, into folder `dest`: its fold manifests and a
    crops.json without test crops (to be cut where the test images are: add_test_crops). What a
    crop run needs elsewhere (a Kaggle notebook). -> the files written."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    meta = json.loads((crops.dir / META).read_text())
    meta["test"], meta["counts"]["test"] = {}, {}
    written = []
    for k in crops.folds:
        written.append(dest / crops.manifest(k).name)
        atomic_write_text(written[-1], crops.manifest(k).read_text())
    atomic_write_text(dest / META, json.dumps(meta, indent=1) + "\n")  # last, as it marks the set finished
    return [*written, dest / META]


# ----------------------------------------------------------------------------- reading
def read_crop_set(path) -> CropSet:
    """The crop set in folder `path`, from its crops.json (the only reader of that file)."""
    path = Path(path)
    meta_path = path / META
    if not meta_path.is_file():
        raise NcfmError(f"{meta_path}: not found, so {path} is not a finished crop set (an interrupted build?); "
                        f"{_FIX}")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, this version reads {FORMAT}")
        crops = CropSet(
            dir=path, name=str(meta["name"]), digest=str(meta["digest"]),
            settings=CropSettings(**meta["settings"]), classes=tuple(meta["classes"]),
            without_boxes=tuple(meta["without_boxes"]), folds=tuple(int(k) for k in meta["folds"]),
            counts=dict(meta["counts"]),
            test_ids={int(s): tuple(t["images"]) for s, t in meta["test"].items()},
            test_folds={int(s): tuple(int(k) for k in t["folds"]) for s, t in meta["test"].items()},
            test_boxes={(int(s), int(k)): dict(zip(t["images"], (list(map(float, sc)) for sc in scores)))
                        for s, t in meta["test"].items() for k, scores in (t.get("scores") or {}).items()})
    except (ValueError, KeyError, TypeError, AttributeError, NcfmError) as e:
        raise NcfmError(f"{meta_path}: not a valid crop set record ({e}); {_FIX}") from None
    missing = [f"fold{k}.csv" for k in crops.folds if not (path / f"fold{k}.csv").is_file()]
    if missing:
        raise NcfmError(f"{path}: {', '.join(missing)} missing beside {META}; {_FIX}")
    return crops
