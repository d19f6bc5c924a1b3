"""The report of a detector run: box quality per fold, loss curves, fish-score histogram, found vs
true boxes and their crops.

A detector run (`ncfm detect`; runs.is_detector) has no classes to score. Its section of the page
shows, per fold, the box numbers of ncfm.boxes.detection_quality (measured again from
oof_boxes.csv against the true boxes.csv beside the folds manifest, else as state.json recorded
them) and their mean, the loss curves, the best found score of fish against empty images, and a
grid of the held-out images whose best box is worst, each with the crop that box becomes
(ncfm.crops). The images are read from the data folder the fold's config.json names; a missing one
is skipped with a note.

ncfm.report owns the page and calls in here (importing this module only inside the functions that
use it); this module takes the page's small readers, plotting and HTML helpers from
ncfm.report_page and never imports ncfm.report.
"""

from __future__ import annotations

import html
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import runs
from ncfm.folds import read_manifest
from ncfm.report_page import (
    FoldRun,
    _figure,
    _fmt,
    _history,
    _n_folds,
    _or_note,
    _pct,
    _png,
    _png_saver,
    _run_header,
    _td,
    read_fold_scheme,
)

GRID_IMAGES = 16  # the picture grid shows at most this many held-out images, 4 per row
GRID_COLUMNS = 4
QUALITY_KEYS = ("recall@0.5", "top1@0.5", "best_iou", "fish_auc", "boxed_images", "true_boxes")


@dataclass
class DetectorRun:
    path: Path
    folds: list[FoldRun]  # oof and classes unused: a detector fold has found boxes instead
    found: dict[int, pd.DataFrame] = field(default_factory=dict)  # fold -> its oof_boxes.csv
    manifest: pd.DataFrame | None = None  # folds.csv, when it can be found from here
    truth: pd.DataFrame | None = None  # boxes.csv beside it (ncfm.boxes), likewise
    data_dir: Path | None = None  # where the images are, likewise
    empty_classes: tuple[str, ...] = ()  # the classes whose images hold no fish (config.json)
    scheme: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.resolve().name


def _locate(given, run_dir: Path) -> Path | None:
    """A path from a fold's config.json: as given (relative to where the command ran), or
    relative to the folder that holds runs/ (the project root, usually)."""
    if not given:
        return None
    given = Path(given)
    candidates = [given] if given.is_absolute() else [given, run_dir.resolve().parent.parent / given]
    return next((p for p in candidates if p.exists()), None)


def load_detector_run(run_dir: Path, calibration_dir: Path | None = None) -> DetectorRun:
    """Read a detector run through ncfm.runs, and the true boxes and folds it was trained on.

    Nothing here is fatal: an unfinished fold, a damaged or missing file, a data folder that
    cannot be found from here are notes, and the page shows what the rest allows. (calibration_dir: a
    detector run has no calibration; the report loads every family with the same arguments.)"""
    from ncfm.boxes import boxes_path, read_boxes

    run_dir = Path(run_dir)
    notes: list[str] = []
    run = DetectorRun(run_dir, [], notes=notes)
    for fold in runs.all_folds(run_dir):
        config = _or_note(runs.read_config, fold, notes, "its settings are not shown") or {}
        state = _or_note(runs.read_state, fold, notes, "its progress is not shown") or {}
        fr = FoldRun(fold.index, fold.dir, config, state, _history(fold, notes))
        run.folds.append(fr)
        if fold.oof_boxes.is_file():
            found = _or_note(runs.read_found_boxes, fold.oof_boxes, notes, "left out of the box numbers")
            if found is not None:
                run.found[fold.index] = found.assign(fold=fold.index)
        else:
            notes.append(f"{fold.name}: no {fold.oof_boxes.name} yet ({fr.status}); left out of the box numbers")
    n_folds = _n_folds(run.folds)
    if len(run.folds) < n_folds:
        present = {f.fold for f in run.folds}
        notes.append(f"folds not started: {', '.join(f'fold{k}' for k in range(n_folds) if k not in present)}")
    config = next((f.config for f in run.folds if f.config), {})
    run.scheme = read_fold_scheme(run_dir, config)
    run.empty_classes = tuple(config.get("empty_classes") or ())
    folds_csv = _locate(config.get("folds_csv"), run_dir)
    if folds_csv is None:
        notes.append(f"folds manifest {config.get('folds_csv')} not found from here; box numbers are those "
                     f"state.json recorded, and no fish/no-fish scores are shown")
    else:
        run.manifest = _or_note(lambda p: read_manifest(p)[0], folds_csv, notes, "box numbers from state.json")
        truth_csv = boxes_path(folds_csv)
        run.truth = _or_note(read_boxes, truth_csv, notes, "box numbers from state.json; no picture grid")
    run.data_dir = _locate(config.get("data_dir"), run_dir)
    if run.data_dir is None and run.found:
        notes.append(f"data folder {config.get('data_dir')} not found from here; no picture grid")
    return run


def _all_found(run: DetectorRun) -> pd.DataFrame | None:
    return pd.concat(run.found.values(), ignore_index=True) if run.found else None


def _held_out(run: DetectorRun, folds) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The true boxes, fish images and empty images of `folds`' held-out images, as detect measured them."""
    val = run.manifest[run.manifest.fold.isin(list(folds))]
    truth = run.truth[run.truth.image.isin(set(val.image))]
    boxed = set(truth.image)
    return truth, [i for i in val.image if i in boxed], list(val.image[val.label.isin(run.empty_classes)])


def fold_quality(run: DetectorRun) -> dict[int, dict]:
    """Per fold, ncfm.boxes.detection_quality of its found boxes (the keys of QUALITY_KEYS).

    Measured again from oof_boxes.csv, boxes.csv and folds.csv when all can be read (a note
    when that differs from what state.json recorded), else state.json's record; a fold with
    neither is absent."""
    from ncfm.boxes import detection_quality

    out = {}
    for f in run.folds:
        recorded = {k: f.state[f"oof_{k}"] for k in QUALITY_KEYS if f"oof_{k}" in f.state}
        if f.fold in run.found and run.manifest is not None and run.truth is not None:
            measured = detection_quality(run.found[f.fold], *_held_out(run, [f.fold]))
            differ = [k for k in recorded if not _same(recorded[k], measured[k])]
            if differ:
                was = ", ".join(f"{k} {_fmt(recorded[k], 4)}" for k in differ)
                run.notes.append(f"fold{f.fold}: state.json records {was} but its oof_boxes.csv against today's "
                                 f"boxes.csv and folds.csv gives {', '.join(_fmt(measured[k], 4) for k in differ)} "
                                 f"(the table shows the latter); were the boxes or folds made again since it trained?")
            out[f.fold] = measured
        elif len(recorded) == len(QUALITY_KEYS):
            out[f.fold] = recorded
    return out


def _same(a, b) -> bool:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return False
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6


def best_box_ious(found: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per image that has both true and found boxes: image, fold (when found has it), best_score,
    best_iou (the rank-0 box against its nearest true box; 0 when nothing was found), found
    (boxes with coordinates) and true (boxes), as ncfm.boxes.detection_quality counts best_iou."""
    from ncfm.boxes import iou

    cols = ["x", "y", "width", "height"]
    true_by = {k: g[cols].to_numpy("float64") for k, g in truth.groupby("image")}
    rows = []
    for image, g in found.groupby("image", sort=True):
        if image not in true_by:
            continue
        g = g.sort_values("rank")
        xywh = g[cols].to_numpy("float64")
        has = ~np.isnan(xywh).any(axis=1)
        best = float(iou(xywh[:1], true_by[image]).max()) if has[0] else 0.0
        rows.append({"image": image, "fold": int(g["fold"].iloc[0]) if "fold" in g else None,
                     "best_score": float(g.score.max()), "best_iou": best,
                     "found": int(has.sum()), "true": len(true_by[image])})
    return pd.DataFrame(rows, columns=["image", "fold", "best_score", "best_iou", "found", "true"])


def worst_boxes_first(per_image: pd.DataFrame) -> pd.DataFrame:
    """Images ordered by best-box IoU, worst first; among equals a confident miss (higher best
    score) comes before a timid one, then by name, so the order is the same every time."""
    return per_image.sort_values(["best_iou", "best_score", "image"], ascending=[True, False, True],
                                 kind="stable").reset_index(drop=True)


def pick_grid_images(per_image: pd.DataFrame, data_dir: Path, limit: int = GRID_IMAGES) -> tuple[list[str], list[str]]:
    """The first `limit` images of worst_boxes_first whose file is under data_dir, and those
    passed over on the way because their file is missing."""
    shown, missing = [], []
    for image in worst_boxes_first(per_image).image:
        if len(shown) == limit:
            break
        (shown if (data_dir / image).is_file() else missing).append(image)
    return shown, missing


def image_scores(run: DetectorRun) -> tuple[np.ndarray, np.ndarray] | None:
    """The best found score of every held-out fish (boxed) image and every empty image of the
    finished folds; None when the folds manifest or the true boxes are not at hand."""
    found = _all_found(run)
    if found is None or run.manifest is None or run.truth is None:
        return None
    _, fish, empty = _held_out(run, run.found)
    top = found.groupby("image").score.max()
    return top.reindex(fish).fillna(0.0).to_numpy(), top.reindex(empty).fillna(0.0).to_numpy()


def plot_detector_curves(run: DetectorRun) -> bytes | None:
    """Training and validation loss against epoch, one colour per fold, best epochs starred.
    Log scale: a detector's loss falls by orders of magnitude in its first epochs."""
    folds = [f for f in run.folds if f.history is not None and not f.history.empty]
    if not folds:
        return None
    fig = _figure(9, 4.2)
    ax = fig.subplots()
    positive = True
    for i, f in enumerate(folds):
        h, colour = f.history, f"C{i % 10}"
        ax.plot(h["epoch"], h["loss"], "-", color=colour, lw=1.2, alpha=0.6, label=f"fold {f.fold} loss")
        ax.plot(h["epoch"], h["val_loss"], "o--", color=colour, ms=3, lw=1.5, label=f"fold {f.fold} val_loss")
        positive &= bool((h[["loss", "val_loss"]].dropna() > 0).all(axis=None))
        best = f.state.get("best_epoch")
        at_best = h.loc[h["epoch"] == best, "val_loss"] if best is not None else []
        if len(at_best) and pd.notna(at_best.iloc[0]):
            ax.plot([best], [at_best.iloc[0]], "*", ms=14, color=colour, mec="black", zorder=5)
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("focal + box loss" + (" (log scale)" if positive else ""))
    ax.set_title(f"{run.name}: detector loss per fold (★ best epoch: lowest val_loss)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2 if len(folds) > 2 else 1)
    return _png(fig)


def plot_fish_scores(fish: np.ndarray, empty: np.ndarray, empty_name: str, auc: float | None) -> bytes:
    """Histograms of the best found score: images with fish against images without."""
    fig = _figure(6.5, 3.2)
    ax = fig.subplots()
    bins = np.linspace(0, 1, 21)
    ax.hist(np.clip(fish, 0, 1), bins=bins, alpha=0.6, color="tab:blue", label=f"fish (boxed), n={len(fish)}")
    if len(empty):
        ax.hist(np.clip(empty, 0, 1), bins=bins, alpha=0.6, color="tab:orange", label=f"{empty_name}, n={len(empty)}")
    ax.set_xlabel("best found box's score")
    ax.set_ylabel("images")
    ax.set_title("Fish / no-fish: best score per held-out image" + (f" (ROC AUC {auc:.3f})" if auc is not None
                                                                   and math.isfinite(auc) else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _draw_boxes(ax, found: pd.DataFrame, truth: pd.DataFrame, image_height: int) -> None:
    """True boxes green; found boxes with their scores, the best (rank 0) red and thick, the others orange."""
    from matplotlib.patches import Rectangle

    for t in truth.itertuples(index=False):
        ax.add_patch(Rectangle((t.x, t.y), t.width, t.height, fill=False, ec="lime", lw=2.2))
    for b in found.sort_values("rank", ascending=False).itertuples(index=False):  # the best drawn last, on top
        if not np.isfinite([b.x, b.y, b.width, b.height]).all():
            continue
        best = b.rank == 0
        colour = "red" if best else "orange"
        ax.add_patch(Rectangle((b.x, b.y), b.width, b.height, fill=False, ec=colour, lw=2.0 if best else 0.9))
        above = b.y > 0.08 * image_height  # else the score goes under the box, inside the picture
        ax.text(b.x, b.y if above else b.y + b.height, f"{b.score:.2f}", color="white", fontsize=7 if best else 5.5,
                va="bottom" if above else "top", ha="left", clip_on=True,
                bbox=dict(facecolor=colour, edgecolor="none", pad=0.8, alpha=0.85 if best else 0.6))


def plot_box_grid(rows: pd.DataFrame, found: pd.DataFrame, truth: pd.DataFrame, data_dir: Path,
                  title: str) -> tuple[bytes | None, list[str]]:
    """Each image of `rows` (image, fold, best_score, best_iou; drawn in that order) with its true
    boxes (green) and found boxes (best red, others orange, with scores), and beside it the crop
    its best box becomes (ncfm.crops with the crop set's default margin and aspect). Returns the
    PNG (None when no image could be read) and the images that could not be read."""
    from PIL import Image

    from ncfm.crops import CropSettings, crop_window, cut_crop

    crop = CropSettings()
    cells, unreadable = [], []
    for r in rows.itertuples(index=False):
        try:
            with Image.open(data_dir / r.image) as im:
                im = im.convert("RGB")
        except (OSError, ValueError):  # PIL's "cannot identify image file", a truncated file
            unreadable.append(r.image)
            continue
        mine = found[found.image == r.image].sort_values("rank")
        box = mine[["x", "y", "width", "height"]].to_numpy("float64")[0]  # the best; NaN: nothing found
        window = crop_window(box, im.size, crop.margin, crop.aspect)
        cut = cut_crop(np.asarray(im), window, crop.size)
        thumb = im.copy()
        thumb.thumbnail((480, 480))  # drawn at the original's coordinates (extent) but light in the PNG
        cells.append((r, im.size, np.asarray(thumb), cut, mine, truth[truth.image == r.image], window,
                      np.isfinite(box).all()))
    if not cells:
        return None, unreadable
    n_rows = math.ceil(len(cells) / GRID_COLUMNS)
    n_cols = min(len(cells), GRID_COLUMNS)
    # each cell: the image (1.75 parts wide) then its square crop (1 part), rows as tall as they need
    aspect = float(np.median([size[1] / size[0] for _, size, *_ in cells]))
    row_height = max(4.2 * 1.75 / 2.75 * aspect, 4.2 / 2.75) + 0.45
    fig = _figure(4.2 * n_cols, row_height * n_rows + 0.3)
    grid = fig.add_gridspec(n_rows, 2 * n_cols, width_ratios=[1.75, 1] * n_cols)
    for i, (r, (width, height), thumb, cut, mine, true, window, detected) in enumerate(cells):
        ax = fig.add_subplot(grid[i // GRID_COLUMNS, 2 * (i % GRID_COLUMNS)])
        ax.imshow(thumb, extent=(0, width, height, 0))
        _draw_boxes(ax, mine, true, height)
        x0, y0, x1, y1 = window
        ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], ":", color="white", lw=0.8)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        fold = f"fold {r.fold} · " if r.fold is not None and not pd.isna(r.fold) else ""
        what = f"IoU {r.best_iou:.2f} · score {r.best_score:.2f}" if detected else "nothing found"
        ax.set_title(f"{Path(r.image).name}\n{fold}{what}", fontsize=7.5)
        ax.set_xticks([])
        ax.set_yticks([])
        cax = fig.add_subplot(grid[i // GRID_COLUMNS, 2 * (i % GRID_COLUMNS) + 1])
        cax.imshow(cut)
        cax.set_title("its crop", fontsize=7)
        cax.set_xticks([])
        cax.set_yticks([])
    fig.suptitle(f"{title} — green: true box; red: best found box (rank 0), orange: the others, with scores; "
                 f"dotted white: the crop window", fontsize=9)
    return _png(fig), unreadable


def _minutes(seconds) -> str:
    if not isinstance(seconds, numbers.Real) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return "—"
    return f"{int(seconds // 60)}m{int(round(seconds % 60)):02d}s" if seconds >= 60 else f"{seconds:.0f}s"


def summarize_detector_run(run: DetectorRun) -> dict:
    """The per-fold box numbers (fold_quality), their mean over folds, and all finished folds
    pooled (detection_quality on every held-out image at once)."""
    from ncfm.boxes import detection_quality

    quality = fold_quality(run)
    summary: dict = {"run": str(run.path), "name": run.name, "kind": runs.DETECTOR, "n_folds": _n_folds(run.folds),
                     "folds": [], "mean": None, "pooled": None, "notes": run.notes, "scheme": run.scheme}
    for f in run.folds:
        q = quality.get(f.fold)
        summary["folds"].append({"fold": f.fold, "status": f.status, "best_epoch": f.state.get("best_epoch"),
                                 "best_val_loss": f.state.get("best_val_loss"),
                                 "train_seconds": f.state.get("train_seconds"),
                                 **{k: (q or {}).get(k) for k in QUALITY_KEYS}})
    done = [r for r in summary["folds"] if r["fold"] in quality]
    if done:
        mean = {}
        for k in ("best_val_loss", "train_seconds", *QUALITY_KEYS):
            values = [float(r[k]) for r in done if isinstance(r[k], numbers.Real) and not isinstance(r[k], bool)]
            values = [v for v in values if math.isfinite(v)]
            mean[k] = float(np.mean(values)) if values else None
        summary["mean"] = mean | {"folds": [r["fold"] for r in done]}
    if run.found and run.manifest is not None and run.truth is not None:
        summary["pooled"] = detection_quality(_all_found(run), *_held_out(run, run.found)) | {"folds": sorted(run.found)}
    return summary


def _detector_table(s: dict, slug: str) -> str:
    head = ("<tr><th>fold</th><th>best epoch</th><th>best val_loss</th><th>recall@0.5</th><th>top-1 hit@0.5</th>"
            "<th>best-box IoU</th><th>fish/no-fish AUC</th><th>boxed images</th><th>true boxes</th>"
            "<th>train time</th><th>status</th></tr>")

    def count(v) -> str:  # a fold's count, or the mean of the folds' counts
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
            return "—"
        return str(int(v)) if float(v).is_integer() else f"{v:.1f}"

    def cells(r: dict, key: str) -> str:
        def one(k, text):
            return _td(text, f"{slug}-{key}-{k}")
        return (one("best-val-loss", _fmt(r.get("best_val_loss"), 4)) + one("recall", _pct(r.get("recall@0.5")))
                + one("top1", _pct(r.get("top1@0.5"))) + one("best-iou", _fmt(r.get("best_iou"), 3))
                + one("fish-auc", _fmt(r.get("fish_auc"), 3)) + one("boxed", count(r.get("boxed_images")))
                + one("true-boxes", count(r.get("true_boxes"))) + one("train-time", _minutes(r.get("train_seconds"))))

    rows = []
    for r in s["folds"]:
        k = r["fold"]
        rows.append("<tr>" + _td(f"fold{k}", numeric=False)
                    + _td(r["best_epoch"] if r["best_epoch"] is not None else "—", f"{slug}-fold{k}-best-epoch")
                    + cells(r, f"fold{k}") + _td(r["status"], numeric=False) + "</tr>")
    m = s["mean"]
    if m is not None:
        label = f"mean of {len(m['folds'])} fold{'s' if len(m['folds']) != 1 else ''}"
        rows.append('<tr class="total">' + _td(label, numeric=False) + _td("") + cells(m, "mean")
                    + _td("", numeric=False) + "</tr>")
    p = s["pooled"]
    if p is not None and len(p["folds"]) > 1:
        rows.append('<tr class="base">' + _td(f"all held-out images of {len(p['folds'])} folds pooled", numeric=False)
                    + _td("") + _td("") + _td(_pct(p["recall@0.5"]), f"{slug}-oof-recall")
                    + _td(_pct(p["top1@0.5"]), f"{slug}-oof-top1") + _td(_fmt(p["best_iou"], 3), f"{slug}-oof-best-iou")
                    + _td(_fmt(p["fish_auc"], 3), f"{slug}-oof-fish-auc") + _td(p["boxed_images"])
                    + _td(p["true_boxes"]) + _td("") + _td("", numeric=False) + "</tr>")
    return f'<table id="{slug}-detect">{head}{"".join(rows)}</table>'


def _detector_model_text(run: DetectorRun) -> str:
    c = next((f.config for f in run.folds if f.config), {})
    bits = [f"RetinaNet {c['backbone']}" if c.get("backbone") else "RetinaNet"]
    if c.get("image_size"):
        bits.append(f"{c['image_size']}px")
    if c.get("weights"):
        bits.append(f"weights {c['weights']}")
    if c.get("epochs"):
        bits.append(f"{c['epochs']} epochs")
    if isinstance(c.get("anchor_size_used"), numbers.Real):
        bits.append(f"anchors {c['anchor_size_used']:.2f}")
    return ", ".join(bits)


def _detector_section(run: DetectorRun, summary: dict, slug: str, prefix: str, out_dir: Path,
                      written: list[Path]) -> str:
    """One detector run's part of the page; writes its PNGs into out_dir."""

    save = _png_saver(out_dir, prefix, written)
    parts = _run_header("Detector run", run, summary, slug)
    parts += ["<h3>Detection quality on the held-out images</h3>", _detector_table(summary, slug),
              '<p class="muted">Per fold, on the training images that fold held out (<code>oof_boxes.csv</code> '
              "against <code>boxes.csv</code>). recall@0.5: share of true boxes some found box overlaps by IoU ≥ 0.5; "
              "top-1 hit: share of boxed images whose best box does; best-box IoU: mean over boxed images of the best "
              "box's IoU "
              "with its nearest true box (what the crop rests on); fish/no-fish AUC: the best score ranking images "
              f"with fish above {html.escape('/'.join(run.empty_classes) or 'empty')} images. Best epoch: lowest "
              "val_loss.</p>"]

    parts.append("<h3>Loss curves</h3>")
    png = plot_detector_curves(run)
    parts.append(save(png, "detect_curves", "detector loss curves") if png else "<p>No training history yet.</p>")

    found = _all_found(run)
    if found is None:
        parts.append("<p>No fold has found boxes on its held-out images yet: the score histogram and the picture "
                     "grid appear once a fold finishes.</p>")
        return "\n".join(parts)

    parts.append("<h3>Fish / no-fish scores</h3>")
    scores_ = image_scores(run)
    if scores_ is None:
        parts.append("<p>Needs the folds manifest and boxes.csv (see the notes).</p>")
    else:
        fish, empty = scores_
        auc = (summary["pooled"] or {}).get("fish_auc")
        parts.append(save(plot_fish_scores(fish, empty, "/".join(run.empty_classes) or "empty", auc),
                          "detect_scores", "best score of fish and empty images"))

    parts.append("<h3>Worst boxes first</h3>")
    if run.truth is None or run.data_dir is None:
        parts.append("<p>Needs boxes.csv and the images (see the notes).</p>")
        return "\n".join(parts)
    per_image = best_box_ious(found, run.truth)
    shown, missing = pick_grid_images(per_image, run.data_dir)
    rows = worst_boxes_first(per_image).set_index("image").loc[shown].reset_index()
    png, unreadable = plot_box_grid(rows, found, run.truth, run.data_dir, f"{run.name}: held-out images, "
                                    f"worst best-box IoU first")
    summary["grid"] = [i for i in shown if i not in set(unreadable)]
    skipped = [f"{i} (missing)" for i in missing] + [f"{i} (unreadable)" for i in unreadable]
    if skipped:
        parts.append(f'<div class="notes" id="{slug}-grid-skipped">Skipped {len(skipped)} image(s) not found or not '
                     f"readable under {html.escape(str(run.data_dir))}: {html.escape(', '.join(skipped))}</div>")
    if png is None:
        parts.append("<p>No held-out image with true boxes could be read.</p>")
    else:
        parts.append(f"<p>The {len(summary['grid'])} held-out images (of {len(per_image)} with true boxes) whose best "
                     f"found box overlaps the true box least, worst first, each with the crop that box becomes "
                     f"(the crop step's default margin and aspect).</p>")
        parts.append(save(png, "detect_grid", "held-out images with true and found boxes, worst first"))
    return "\n".join(parts)


def _format_detector(s: dict) -> list[str]:
    lines = [f"{s['run']}  {s.get('model', '')}",
             f"  {'fold':<16}{'recall@0.5':>11}{'top-1 hit':>10}{'best IoU':>9}{'fish AUC':>9}{'boxed':>7}"
             f"{'best epoch':>11}  status"]

    def line(label, r, epoch=""):
        boxed = r.get("boxed_images")
        return (f"  {label:<16}{_pct(r.get('recall@0.5')):>11}{_pct(r.get('top1@0.5')):>10}"
                f"{_fmt(r.get('best_iou'), 3):>9}{_fmt(r.get('fish_auc'), 3):>9}"
                f"{(format(boxed, 'g') if isinstance(boxed, numbers.Real) else '-'):>7}{epoch:>11}")

    for r in s["folds"]:
        lines.append(line(f"fold{r['fold']}", r, str(r["best_epoch"] if r["best_epoch"] is not None else "-"))
                     + f"  {r['status']}")
    if s["mean"] is not None:
        lines.append(line(f"mean of {len(s['mean']['folds'])}", s["mean"]))
    if s["pooled"] is not None and len(s["pooled"]["folds"]) > 1:
        lines.append(line("pooled", s["pooled"]))
    for note in s["notes"]:
        lines.append(f"  note: {note}")
    return lines
