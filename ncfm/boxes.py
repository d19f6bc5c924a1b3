"""Fish boxes: the community's Sloth annotations of the training fish → boxes.csv beside folds.csv.

    ncfm boxes --data-dir data                  # reads data/boxes/*_labels.json
    ncfm boxes --data-dir data alb_labels.json bet_labels.json ...

NCFM's community annotated the training fish with the Sloth tool: one JSON file per class
(alb_labels.json, ..., yft_labels.json, other_labels.json; none for NoF), each a list of
    {"filename": "img_00003.jpg", "class": "image",
     "annotations": [{"class": "rect", "x": 1.0, "y": 2.0, "width": 3.0, "height": 4.0}, ...]}
in pixels, top-left origin. File names are matched to the manifest's training images by their
base name (some carry a folder prefix such as ../data/train/ALB/). Boxes sticking out of the
image are clipped to it; boxes left thinner than a pixel are dropped; the same box twice is kept
once; head/tail points ("class": "point") are ignored. What was odd (unknown file names, fish
images without a box, an image under train/ALB annotated in bet_labels.json) is reported, not
fatal. The file's class is the box's label.

boxes.csv (this module is its one reader and writer): image,label,x,y,width,height,image_width,
image_height; image as in folds.csv, x/y/width/height in the image's own pixels, and the image's
real size, so a later stage can scale the boxes to whatever size it resizes to.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import NcfmError
from ncfm.fileio import atomic_write_text

FILE_NAME = "boxes.csv"
FOLDER = "boxes"  # default place of the Sloth files: <data-dir>/boxes/*_labels.json
PATTERN = "*_labels.json"
COLUMNS = ["image", "label", "x", "y", "width", "height", "image_width", "image_height"]
MIN_SIZE = 1.0  # a box thinner than this (pixels) after clipping is dropped
WHERE_TO_GET = ("the community's Sloth annotations of the training fish were shared on the competition's "
                "Kaggle forum and kernels; put the Sloth *_labels.json files in {folder}/ or pass their paths")
FIX = "re-run `ncfm boxes` (add --force to replace it)"


def boxes_path(folds_csv: os.PathLike | str) -> Path:
    """boxes.csv beside a folds manifest."""
    return Path(folds_csv).with_name(FILE_NAME)


def default_files(data_dir: os.PathLike | str) -> list[Path]:
    """<data_dir>/boxes/*_labels.json, sorted; none is an error saying where to get them."""
    folder = Path(data_dir) / FOLDER
    files = sorted(folder.glob(PATTERN)) if folder.is_dir() else []
    if not files:
        raise NcfmError(f"no box files found: looked for {folder / PATTERN}; " + WHERE_TO_GET.format(folder=folder))
    return files


# --------------------------------------------------------------------------- reading Sloth files
def class_of_file(path: Path, classes) -> str:
    """alb_labels.json -> ALB: the class the file names, spelled as the competition spells it."""
    name = path.name[: -len(".json")] if path.name.lower().endswith(".json") else path.stem
    name = re.sub(r"_labels$", "", name, flags=re.IGNORECASE)
    by_lower = {str(c).lower(): str(c) for c in classes}
    if name.lower() not in by_lower:
        raise NcfmError(f"{path}: names class {name.upper()!r}, which is not one of the competition's classes "
                        f"({', '.join(map(str, classes))}); rename it to <class>_labels.json "
                        f"(e.g. {str(classes[0]).lower()}_labels.json) or leave it out")
    return by_lower[name.lower()]


def _number(value, path: Path, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise NcfmError(f"{path}: {where}: {key}={value!r} is not a number; every rect needs numeric x, y, "
                        f"width and height: fix or remove it")
    return float(value)


def read_sloth(path: os.PathLike | str) -> tuple[list[tuple[str, list[tuple]]], Counter]:
    """One Sloth file as [(filename, [(x, y, width, height), ...]), ...] in file order, and a count
    of the annotations that are not rects ({"point": 12}). Malformed input raises NcfmError naming
    the file and the line/column or the entry."""
    path = Path(path)
    if not path.is_file():
        raise NcfmError(f"{path}: not found; " + WHERE_TO_GET.format(folder="DATA/boxes"))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise NcfmError(f"{path}: not UTF-8 text ({e}); expected a Sloth JSON file") from None
    if not text.strip():
        raise NcfmError(f"{path}: empty file; expected a JSON list of Sloth entries "
                        f"[{{\"filename\": ..., \"annotations\": [...]}}, ...]; download it again")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise NcfmError(f"{path}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg}); "
                        f"fix it there or download it again") from None
    if not isinstance(data, list):
        raise NcfmError(f"{path}: expected a JSON list of Sloth entries at the top level, got a "
                        f"{type(data).__name__}; is it a Sloth *_labels.json file?")
    entries, ignored = [], Counter()
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise NcfmError(f"{path}: entry {i}: expected an object with \"filename\" and \"annotations\", "
                            f"got {json.dumps(entry)[:60]}")
        filename = entry.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            raise NcfmError(f"{path}: entry {i}: no \"filename\" (got {filename!r}); fix or remove the entry")
        annotations = entry.get("annotations", [])
        if not isinstance(annotations, list):
            raise NcfmError(f"{path}: entry {i} ({filename}): \"annotations\" must be a list, got "
                            f"{type(annotations).__name__}")
        rects = []
        for j, ann in enumerate(annotations):
            where = f"entry {i} ({filename}), annotation {j}"
            if not isinstance(ann, dict):
                raise NcfmError(f"{path}: {where}: expected an object, got {json.dumps(ann)[:60]}")
            kind = str(ann.get("class", "rect")).lower()
            if kind != "rect":  # head/tail points and other shapes say nothing about the box
                ignored[kind] += 1
                continue
            missing = [k for k in ("x", "y", "width", "height") if k not in ann]
            if missing:
                raise NcfmError(f"{path}: {where}: missing {', '.join(missing)}; every rect needs numeric x, y, "
                                f"width and height: fix or remove it")
            rects.append(tuple(_number(ann[k], path, where, k) for k in ("x", "y", "width", "height")))
        entries.append((filename, rects))
    return entries, ignored


def _base_name(filename: str) -> str:
    return re.split(r"[\\/]", filename.strip())[-1]


def _clip(box: tuple, w: int, h: int) -> tuple[tuple[float, float, float, float], bool]:
    """(x, y, width, height) clipped to a w x h image, and whether it stuck out; a negative width
    or height spans leftwards/up."""
    x, y, bw, bh = box
    x0, x1 = sorted((x, x + bw))
    y0, y1 = sorted((y, y + bh))
    stuck_out = x0 < 0 or y0 < 0 or x1 > w or y1 > h
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
    return (x0, y0, x1 - x0, y1 - y0), stuck_out


def _image_size(path: Path) -> tuple[int, int]:
    """Width and height from the file's header; no pixel is decoded."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as e:
        raise NcfmError(f"{path}: cannot read its size ({e}); the manifest lists it: fix the image or re-run "
                        f"`ncfm split_train_val --skip-bad --force`") from None


# --------------------------------------------------------------------------- the import
def import_boxes(data_dir: os.PathLike | str, files: list[Path], manifest: pd.DataFrame,
                 *, classes=None) -> tuple[pd.DataFrame, dict]:
    """The boxes of the Sloth `files` on the manifest's training images, and a report of what was odd.

    manifest: folds.csv as a table (image, label). classes: the competition's (default: the
    manifest's labels). Each file's class comes from its name (alb_labels.json -> ALB) and must be
    one of them. Returns (boxes with COLUMNS, sorted by image; report dict, see describe_report).
    """
    data_dir = Path(data_dir)
    files = [Path(f) for f in files]
    if not files:
        raise NcfmError("no box files given; " + WHERE_TO_GET.format(folder=data_dir / FOLDER))
    classes = list(classes) if classes is not None else sorted(set(manifest["label"]))
    file_class = {f: class_of_file(f, classes) for f in files}  # every name checked before any work

    by_name: dict[str, list[tuple[str, str]]] = {}
    for image, label in zip(manifest["image"], manifest["label"]):
        by_name.setdefault(_base_name(image), []).append((image, label))
    sizes: dict[str, tuple[int, int]] = {}
    rows, ignored = [], Counter()
    not_found, ambiguous, clipped, dropped = [], [], 0, 0
    for f in files:
        label = file_class[f]
        entries, skipped = read_sloth(f)
        ignored += skipped
        for filename, rects in entries:
            candidates = by_name.get(_base_name(filename), [])
            if len(candidates) > 1:  # the same name in two folders: the file's class decides
                candidates = [c for c in candidates if c[1] == label]
            if not candidates:
                not_found.append(filename)
                continue
            if len(candidates) > 1:
                ambiguous.append(filename)
                continue
            image, folder_label = candidates[0]
            if rects and image not in sizes:
                sizes[image] = _image_size(data_dir / image)
            for box in rects:
                w, h = sizes[image]
                (x, y, bw, bh), stuck_out = _clip(box, w, h)
                if bw < MIN_SIZE or bh < MIN_SIZE:
                    dropped += 1
                    continue
                clipped += stuck_out
                rows.append((image, label, x, y, bw, bh, w, h, folder_label, f.name))

    df = pd.DataFrame(rows, columns=[*COLUMNS, "folder_label", "file"])
    # the same box twice (in one file or two) is kept once, preferring the file that agrees with the folder
    df["disagrees"] = df["label"] != df["folder_label"]
    df = df.sort_values(["image", "disagrees"], kind="stable")
    key = [df["image"], *(df[c].round(3) for c in ("x", "y", "width", "height"))]
    duplicate = pd.concat(key, axis=1).duplicated().to_numpy()
    df = df[~duplicate].sort_values(["image", "x", "y", "width", "height", "label"], kind="stable")
    df = df.reset_index(drop=True)

    disagree = df[df["disagrees"]].drop_duplicates(["image", "label"])
    box_classes = sorted(set(file_class.values()), key=classes.index)
    boxed = set(df["image"])
    fish = manifest[manifest["label"].isin(box_classes)]
    report = {
        "files": [str(f) for f in files],
        "classes": box_classes,
        "per_class": {c: {"images": int(df.loc[df["label"] == c, "image"].nunique()),
                          "boxes": int((df["label"] == c).sum()),
                          "fish_images": int((manifest["label"] == c).sum()),
                          "without_box": int((~fish.loc[fish["label"] == c, "image"].isin(boxed)).sum())}
                      for c in box_classes},
        "images": len(boxed),
        "boxes": len(df),
        "clipped": int(clipped),
        "dropped_empty": dropped,
        "duplicates": int(duplicate.sum()),
        "ignored_annotations": dict(sorted(ignored.items())),
        "not_found": not_found,
        "ambiguous": ambiguous,
        "without_box": sorted(set(fish["image"]) - boxed),
        "disagreeing": [{"image": r.image, "folder": r.folder_label, "file": r.file, "label": r.label}
                        for r in disagree.itertuples()],
    }
    types = {**dict.fromkeys(["image", "label"], str), **dict.fromkeys(["x", "y", "width", "height"], float),
             **dict.fromkeys(["image_width", "image_height"], int)}
    return df[COLUMNS].astype(types), report


def _first(items, n: int = 5) -> str:
    return ", ".join(map(str, items[:n])) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def describe_report(report: dict) -> str:
    """The report as a person reads it: a table per class, then what was dropped and why."""
    table = pd.DataFrame(report["per_class"]).T[["fish_images", "images", "boxes", "without_box"]]
    table.columns = ["fish images", "annotated", "boxes", "without box"]
    lines = [f"{report['boxes']} boxes on {report['images']} images from {len(report['files'])} file(s)",
             table.to_string()]
    if report["clipped"] or report["dropped_empty"]:
        lines.append(f"clipped {report['clipped']} box(es) sticking out of their image; dropped "
                     f"{report['dropped_empty']} left thinner than {MIN_SIZE:g} px")
    if report["duplicates"]:
        lines.append(f"dropped {report['duplicates']} duplicate box(es) (same image, same box)")
    if report["ignored_annotations"]:
        what = ", ".join(f"{n} {k}" for k, n in report["ignored_annotations"].items())
        lines.append(f"ignored annotations that are not boxes: {what}")
    if report["not_found"]:
        lines.append(f"warning: {len(report['not_found'])} annotated file name(s) not among the training images "
                     f"(skipped): {_first(report['not_found'])}")
    if report["ambiguous"]:
        lines.append(f"warning: {len(report['ambiguous'])} file name(s) match several training images "
                     f"(skipped): {_first(report['ambiguous'])}")
    if report["without_box"]:
        lines.append(f"warning: {len(report['without_box'])} fish image(s) of the annotated classes have no box: "
                     f"{_first(report['without_box'])}")
    if report["disagreeing"]:
        said = [f"{d['image']} in {d['file']}" for d in report["disagreeing"]]
        lines.append(f"warning: {len(said)} image(s) annotated in another class's file than their folder "
                     f"(boxes kept, labelled by the file): {_first(said)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- boxes.csv
def boxes_text(df: pd.DataFrame) -> str:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"boxes table lacks columns {missing}; expected {','.join(COLUMNS)}")
    return df[COLUMNS].to_csv(index=False, lineterminator="\n")


def write_boxes(df: pd.DataFrame, path: os.PathLike | str) -> None:
    """boxes.csv, written atomically (a crash leaves the previous file)."""
    atomic_write_text(path, boxes_text(df))


def read_boxes(path: os.PathLike | str, classes=None) -> pd.DataFrame:
    """boxes.csv as a table with COLUMNS; anything else is an NcfmError naming the file and the fix.
    With `classes`, every label must be one of them."""
    path = Path(path)
    if not path.is_file():
        raise NcfmError(f"{path}: boxes file not found; run `ncfm boxes` first")
    try:
        df = pd.read_csv(path, dtype={"image": str, "label": str}, keep_default_na=False)
    except Exception as e:  # pandas raises many types for unreadable CSVs
        raise NcfmError(f"{path}: cannot read it as CSV ({e}); {FIX}") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise NcfmError(f"{path}: missing columns {missing}; expected {','.join(COLUMNS)}; {FIX}")
    df = df[COLUMNS].copy()
    for c in COLUMNS[2:]:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = pd.Series(~np.isfinite(values.to_numpy(dtype=float)), index=df.index)
        if c.startswith("image_"):
            bad |= (values <= 0) | (values != values.round())
        else:
            bad |= values < 0 if c in ("x", "y") else values <= 0
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise NcfmError(f"{path}: line {i + 2}: {c}={df[c].iloc[i]!r} is not a valid "
                            f"{'image size' if c.startswith('image_') else 'box coordinate'}; {FIX}")
        df[c] = values.astype(int) if c.startswith("image_") else values.astype(float)
    outside = (df["x"] + df["width"] > df["image_width"] + 1e-6) | (df["y"] + df["height"] > df["image_height"] + 1e-6)
    empty = (df["image"] == "") | (df["label"] == "")
    if outside.any() or empty.any():
        i = int((outside | empty).to_numpy().argmax())
        what = "no image or label" if empty.iloc[i] else "a box reaching beyond its image"
        raise NcfmError(f"{path}: line {i + 2}: {what}; {FIX}")
    unknown = sorted(set(df["label"]) - set(map(str, classes))) if classes is not None else []
    if unknown:
        raise NcfmError(f"{path}: unknown labels {unknown[:10]}; the competition's classes are "
                        f"{', '.join(map(str, classes))}; {FIX}")
    return df


# --------------------------------------------------------------------------- command
def main(args) -> int:
    """`ncfm boxes`: the Sloth files -> boxes.csv beside folds.csv; prints the report."""
    from ncfm.folds import folds_csv_path, read_manifest
    from ncfm.dataset import competition_for

    data_dir = Path(args.data_dir)
    folds_csv = folds_csv_path(data_dir, args.folds_csv)
    if not folds_csv.is_file():
        raise NcfmError(f"{folds_csv}: folds manifest not found; boxes are matched to its training images: run "
                        f"`ncfm split_train_val --data-dir {data_dir}` first (or pass --folds-csv)")
    comp = competition_for(data_dir, folds_csv)
    manifest, _ = read_manifest(folds_csv, classes=comp.classes)
    files = [Path(f) for f in args.files] if args.files else default_files(data_dir)
    df, report = import_boxes(data_dir, files, manifest, classes=comp.classes)
    print(describe_report(report))

    out = boxes_path(folds_csv)
    text = boxes_text(df)
    if not out.exists():
        status = "written"
    elif out.read_text() == text:
        status = "unchanged"
    elif not args.force:
        raise NcfmError(f"{out}: exists with different boxes (other files or an older import); pass --force to "
                        f"overwrite it")
    else:
        status = "overwritten"
    if status != "unchanged":
        atomic_write_text(out, text)
    print(f"{out}: {status} ({len(df)} boxes on {df['image'].nunique()} images)")
    return 0


# ----------------------------------------------------------------------------- box arithmetic
def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xywh boxes: (N, 4) x (M, 4) -> (N, M); NaN boxes overlap nothing."""
    a, b = np.asarray(a, "float64").reshape(-1, 4), np.asarray(b, "float64").reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = inter / union
    return np.nan_to_num(out, nan=0.0)


def detection_quality(found: pd.DataFrame, truth: pd.DataFrame, fish_images, empty_images) -> dict:
    """How well found boxes (image,rank,score,x,y,width,height) match the true ones (image,x,y,width,height).

    recall@0.5: the share of true boxes that some found box overlaps by IoU >= 0.5;
    best_iou: the mean, over boxed images, of the best-ranked box's IoU with its nearest true box;
    top1@0.5: the share of boxed images whose best-ranked box hits a true box;
    fish_auc: ROC AUC of an image's best score, fish images against empty ones."""
    from sklearn.metrics import roc_auc_score

    cols = ["x", "y", "width", "height"]
    found_by = {k: g.sort_values("rank") for k, g in found.groupby("image")}
    hits, n_true, best = 0, 0, []
    for image, g in truth.groupby("image"):
        f = found_by.get(image)
        true_xywh = g[cols].to_numpy()
        n_true += len(g)
        if f is None or f[cols].isna().all(axis=None):
            best.append(0.0)
            continue
        overlap = iou(f[cols].to_numpy(), true_xywh)
        hits += int((overlap.max(axis=0) >= 0.5).sum())
        best.append(float(overlap[0].max()))
    top_score = found.groupby("image").score.max()
    fish = [top_score.get(i, 0.0) for i in fish_images]
    empty = [top_score.get(i, 0.0) for i in empty_images]
    auc = (roc_auc_score([1] * len(fish) + [0] * len(empty), fish + empty)
           if fish and empty else float("nan"))
    return {"recall@0.5": hits / n_true if n_true else float("nan"),
            "top1@0.5": float(np.mean(np.asarray(best) >= 0.5)) if best else float("nan"),
            "best_iou": float(np.mean(best)) if best else float("nan"),
            "fish_auc": float(auc), "boxed_images": len(best), "true_boxes": n_true}
