"""The report of one or more runs: learning curves, OOF confusion, per-class loss, calibration, CV table.

    ncfm report --run runs/NAME [--run runs/OTHER] [--out FOLDER]

Reads a run folder only through ncfm.runs (each fold's config, history, state and out-of-fold
predictions; the calibration predict applied) and writes `report.html` plus the PNGs it shows
into the first run folder (or --out). The page is self-contained: every image is also embedded
as base64, so the HTML opens from disk, mailed or copied anywhere.

Any competition: the classes are the run's own (each fold's config, else what its best model
says, else NCFM's for runs from before classes were recorded), in the models' output order.
Every table lists them all; the confusion and per-class plots show at most PLOT_CLASSES of them
(the most confused, the costliest) so that a 120-class run stays legible.

It is meant to run after every fold and after predict, so it is quick (a few seconds) and
works on a run that is still training: a fold without OOF predictions is listed, not fatal, and
a damaged config, state, history or calibration file is a note on the page. Only an OOF file
that is present but malformed stops it, because every number on the page rests on it.

The report fits nothing: the calibration it shows is the one `ncfm predict` fitted, applied
and recorded. Log losses are Kaggle's (`calibrate.kaggle_log_loss`: rows renormalised, clipped
to 1e-15); accuracy is top-1, and a two-class run also gets ROC AUC.

A run of many members (`ncfm train --folds --seeds/--config`) is shown as its <config>-seed<S>/
groups, each a run of its own, after a table of every member: config, seed, fold, status, OOF
log loss, epochs and training time.

A detector run (`ncfm detect`; runs.is_detector) gets its own section instead, drawn by
ncfm.report_detect: box quality per fold, loss curves, fish/no-fish scores, the worst boxes first
with their crops.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import NcfmError, runs
from ncfm.calibrate import (
    accuracy, apply_floor, calibrate, class_shares, kaggle_log_loss, per_sample_log_loss, prior_score, roc_auc,
)
from ncfm.competition import METRIC_NAMES, NCFM_CLASSES
from ncfm.ensemble import ensemble_oof, fold_priors, pool_folds, shrunk_oof
from ncfm.fileio import atomic_write_text
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

RELIABILITY_BINS = 10
PLOT_CLASSES = 20  # the confusion and per-class plots show at most this many classes


def _class_list(classes, limit: int = 20) -> str:
    return ", ".join(classes[:limit]) + (f", ... ({len(classes)} in all)" if len(classes) > limit else "")


def uniform_log_loss(n_classes: int) -> float:
    """Log loss of predicting 1/n for every class: ln n (2.07944 for NCFM's 8)."""
    return math.log(n_classes)


# --------------------------------------------------------------------------- reading a run
@dataclass
class Run:
    path: Path
    folds: list[FoldRun]
    classes: tuple[str, ...] = NCFM_CLASSES  # the models' outputs, in order
    calibration: dict | None = None  # what predict fitted and applied (runs.read_calibration), if any
    scheme: dict = field(default_factory=dict)  # the fold/group scheme (see read_fold_scheme)
    notes: list[str] = field(default_factory=list)  # things a reader should know (missing files, ...)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def oof_folds(self) -> list[FoldRun]:
        """The folds that have out-of-fold predictions."""
        return [f for f in self.folds if f.oof is not None]


def _checked_calibration(calibration: dict | None, run_dir: Path, notes: list[str]) -> dict | None:
    """predict's calibration, its temperature, floor and clip as floats calibrate() accepts; None
    (with a note) when they are not."""
    if calibration is None:
        return None
    try:
        t, floor, clip = (float(calibration.get(key) or default)
                          for key, default in (("temperature", 1.0), ("floor", 0.0), ("clip", 0.0)))
        valid = math.isfinite(t) and t > 0 and 0 <= floor < 1 and 0 <= clip < 1
    except (TypeError, ValueError):
        valid = False
    if not valid:
        notes.append(f"{runs.calibration_path(run_dir)}: temperature, floor or clip is not a valid number; "
                     f"calibration not shown (run `ncfm predict` again to fit it anew)")
        return None
    return calibration | {"temperature": t, "floor": floor, "clip": clip}


def load_run(run_dir: Path, calibration_dir: Path | None = None) -> Run:
    """Read a run folder through ncfm.runs (the calibration predict recorded in `calibration_dir`,
    default the run's own: a member group's is in the run above it).

    Raises NcfmError when it is not a run folder at all, or when an OOF file is malformed (every
    number rests on it); other damaged files become notes."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NcfmError(f"{run_dir}: no such run folder; pass a folder written by `ncfm train --run`")
    found = runs.all_folds(run_dir)
    if not found:
        raise NcfmError(f"{run_dir}: no fold<k>/ folders; train a fold first (`ncfm train --run {run_dir} --fold 0`)")
    notes: list[str] = []
    folds = []
    for fold in found:
        config = _or_note(runs.read_config, fold, notes, "its settings are not shown") or {}
        state = _or_note(runs.read_state, fold, notes, "its progress is not shown") or {}
        folds.append(FoldRun(fold.index, fold.dir, config, state, _history(fold, notes),
                             classes=runs.fold_classes(fold, config)))
    recorded = [f for f in folds if f.classes]
    classes = recorded[0].classes if recorded else NCFM_CLASSES
    if not recorded:
        notes.append(f"no fold records its classes ({found[0].config.name} or {found[0].best.name}); "
                     f"assuming NCFM's {len(NCFM_CLASSES)}, as for runs from before classes were recorded")
    for fold, fr in zip(found, folds):
        if fr.classes and fr.classes != classes:
            notes.append(f"{fold.name}: trained for other classes ({_class_list(fr.classes, 5)}) than "
                         f"{recorded[0].path.name} ({_class_list(classes, 5)}); left out of the OOF numbers")
        elif fold.oof.is_file():
            fr.oof = runs.read_oof(fold.oof, classes, f"retrain that fold ({fold.retrain_hint()}) or move "
                                   f"{fold.dir} out of the run to leave it out")
        else:
            notes.append(f"{fold.name}: no {fold.oof.name} yet ({fr.status}); left out of the OOF numbers")
    config = next((f.config for f in folds if f.config), {})
    n_folds = _n_folds(folds)
    if len(folds) < n_folds:
        present = {f.fold for f in folds}
        notes.append(f"folds not started: {', '.join(f'fold{k}' for k in range(n_folds) if k not in present)}")
    calibration_dir = calibration_dir or run_dir
    calibration = _or_note(runs.read_calibration, calibration_dir, notes, "calibration not shown")
    run = Run(run_dir, folds, classes, _checked_calibration(calibration, calibration_dir, notes),
              read_fold_scheme(run_dir, config), notes)
    seen = pd.concat([f.oof["image"] for f in run.oof_folds]) if run.oof_folds else pd.Series([], dtype=str)
    if seen.duplicated().any():
        notes.append(f"{int(seen.duplicated().sum())} image(s) appear in more than one fold's {found[0].oof.name} "
                     f"(e.g. {seen[seen.duplicated()].iloc[0]}); the folds manifests differ")
    return run


def pooled_oof(run: Run) -> pd.DataFrame | None:
    """Every fold's OOF rows stacked (ensemble.pool_folds), with a `fold` column; None when no fold has finished."""
    return pool_folds({f.path.name: f.oof for f in run.oof_folds}, run.classes)


# --------------------------------------------------------------------------- numbers (pure)
def _arrays(oof: pd.DataFrame, classes) -> tuple[np.ndarray, np.ndarray]:
    probs = oof[list(classes)].to_numpy(dtype=np.float64)
    return oof["y"].to_numpy(dtype=np.int64), probs / probs.sum(axis=1, keepdims=True)


def scores(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Log loss and accuracy; ROC AUC too when there are two classes."""
    out = {"log_loss": kaggle_log_loss(labels, probs), "accuracy": accuracy(labels, probs)}
    if probs.shape[1] == 2:
        out["roc_auc"] = roc_auc(labels, probs)
    return out


def confusion_counts(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(true, predicted) counts, rows and columns in the order of the probability columns."""
    n = probs.shape[1]
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (labels, probs.argmax(axis=1)), 1)
    return cm


def most_confused(cm: np.ndarray, limit: int = PLOT_CLASSES) -> np.ndarray:
    """The `limit` classes most involved in mistakes (as true or as predicted class), in class order."""
    mistakes = cm - np.diag(np.diag(cm))
    involvement = mistakes.sum(axis=0) + mistakes.sum(axis=1)
    return np.sort(np.argsort(-involvement, kind="stable")[:limit])


def per_class_table(labels: np.ndarray, probs: np.ndarray, classes) -> pd.DataFrame:
    """Per true class: support, mean log loss, its share of the total loss, accuracy (recall), precision."""
    losses = per_sample_log_loss(labels, probs)
    preds = probs.argmax(axis=1)
    rows = []
    for i, name in enumerate(classes):
        mask = labels == i
        n = int(mask.sum())
        n_pred = int((preds == i).sum())
        rows.append({
            "class": name,
            "images": n,
            "share": n / len(labels) if len(labels) else float("nan"),
            "log_loss": float(losses[mask].mean()) if n else float("nan"),
            "loss_contribution": float(losses[mask].sum() / len(labels)) if len(labels) else float("nan"),
            "accuracy": float((preds[mask] == i).mean()) if n else float("nan"),
            "precision": float((labels[preds == i] == i).mean()) if n_pred else float("nan"),
            "mean_prob": float(probs[:, i].mean()) if len(labels) else float("nan"),
        })
    return pd.DataFrame(rows)


def reliability_table(labels: np.ndarray, probs: np.ndarray, n_bins: int = RELIABILITY_BINS) -> tuple[pd.DataFrame, float]:
    """Top-1 confidence binned into equal-width bins: images, mean confidence, accuracy; and the ECE."""
    conf = probs.max(axis=1)
    hit = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = which == b
        rows.append({"lo": edges[b], "hi": edges[b + 1], "images": int(m.sum()),
                     "confidence": float(conf[m].mean()) if m.any() else float("nan"),
                     "accuracy": float(hit[m].mean()) if m.any() else float("nan")})
    df = pd.DataFrame(rows)
    filled = df[df.images > 0]
    ece = float((filled.images * (filled.confidence - filled.accuracy).abs()).sum() / max(len(labels), 1))
    return df, ece


def apply_predicts_calibration(probs: np.ndarray, calibration: dict) -> np.ndarray:
    """What predict did to its probabilities: calibrate(T, floor) as recorded, then the manual clip."""
    out = calibrate(probs, calibration["temperature"], calibration["floor"])
    return apply_floor(out, calibration["clip"]) if calibration["clip"] else out


def summarize_run(run: Run) -> dict:
    """The CV numbers of one run: per fold, pooled OOF, baselines, and predict's calibration applied to them."""
    oof = pooled_oof(run)
    classes = run.classes
    freqs = None
    summary: dict = {"run": str(run.path), "name": run.name, "n_folds": _n_folds(run.folds), "folds": [],
                     "oof": None, "classes": list(classes), "binary": len(classes) == 2, "scheme": run.scheme,
                     "calibration_json": run.calibration, "notes": run.notes}
    if oof is not None:
        y, p = _arrays(oof, classes)
        freqs = class_shares(y, len(classes))  # the class-prior baseline train and predict use
        summary["oof"] = {
            "folds": [f.fold for f in run.oof_folds],
            "images": len(y),
            **scores(y, p),
            "fold_mean_log_loss": None,
            "fold_std_log_loss": None,
            "uniform_baseline": uniform_log_loss(len(classes)),
            "prior_baseline": prior_score("log_loss", y, freqs),
            "class_shares": dict(zip(classes, map(float, freqs))),
            # predict's calibration (runs.read_calibration), applied to this run's OOF; None before predict
            "temperature": None,
            "floor": None,
            "calibrated_log_loss": None,
        }
        if run.calibration is not None:
            calibrated = apply_predicts_calibration(p, run.calibration)
            summary["oof"].update(temperature=run.calibration["temperature"], floor=run.calibration["floor"],
                                  calibrated_log_loss=kaggle_log_loss(y, calibrated))
    for f in run.folds:
        row = {"fold": f.fold, "status": f.status, "images": None, "log_loss": None, "accuracy": None,
               "prior_baseline": None, "best_epoch": f.state.get("best_epoch"),
               "best_val_loss": f.state.get("best_val_loss"), "epoch": f.state.get("epoch")}
        if summary["binary"]:
            row["roc_auc"] = None
        if f.oof is not None:
            y, p = _arrays(f.oof, classes)
            row.update(images=len(y), **scores(y, p), prior_baseline=prior_score("log_loss", y, freqs))
        summary["folds"].append(row)
    scored = [r["log_loss"] for r in summary["folds"] if r["log_loss"] is not None]
    if summary["oof"] is not None:
        summary["oof"]["fold_mean_log_loss"] = float(np.mean(scored))
        summary["oof"]["fold_std_log_loss"] = float(np.std(scored, ddof=1)) if len(scored) > 1 else None
    return summary


def ensemble_summary(loaded: list[Run]) -> dict | None:
    """The runs' OOF ensembled as predict ensembled them (ensemble.ensemble_oof) over the images every
    run predicted; None when fewer than two runs have OOF predictions. {"images": 0, "problem": ...}
    when they cannot be ensembled (other classes, no common image).

    When the first run's calibration.json was written by `ncfm predict` for exactly these runs, its
    record is followed: the folds it left out, the weights it shrank folds by, its mean and its run
    weights fitted on OOF, so the figure is predict's. (A confidence blend weighs each image by its
    detector score; the report then shows the plain mean and says so.)"""
    with_oof = [run for run in loaded if run.oof_folds]
    if len(with_oof) < 2:
        return None
    names = [str(run.path) for run in with_oof]
    classes = with_oof[0].classes
    if any(run.classes != classes for run in with_oof):
        return {"images": 0, "runs": names, "problem": "the runs were trained for different classes"}
    recorded = _predicts_blend(with_oof)
    mean = recorded.get("mean", "arithmetic")
    pooled = ensemble_oof([_oof_as_predicted(run, recorded) for run in with_oof], classes, mean, names=names)
    if pooled is None:
        return {"images": 0, "runs": names, "problem": "the runs share no OOF images"}
    weights = recorded.get("run_weights") or {}
    fitted = None if "confidence" in weights else [weights.get(str(run.path.resolve())) for run in with_oof]
    probs = pooled.probs
    if fitted and None not in fitted:
        probs = np.tensordot(np.asarray(fitted, "float64"), np.stack(pooled.run_probs), axes=1)
    y = pooled.y
    return {
        "images": len(y),
        "runs": names,
        "mean": mean,
        "run_weights": fitted if fitted and None not in fitted else None,
        "as_predicted": bool(recorded),
        "confidence_blend": "confidence" in weights,  # predict weighed each image by its detector score
        "run_log_loss": [kaggle_log_loss(y, p) for p in pooled.run_probs],
        "run_accuracy": [accuracy(y, p) for p in pooled.run_probs],
        **scores(y, probs),
        "prior_baseline": prior_score("log_loss", y, class_shares(y, len(classes))),
    }


def _predicts_blend(runs_: list[Run]) -> dict:
    """The first run's calibration.json, when predict wrote it for exactly these runs (paths resolved,
    weights keyed the same way); else {}."""
    recorded = runs_[0].calibration or {}
    named = [Path(r).resolve() for r in recorded.get("runs", [])]
    if named != [run.path.resolve() for run in runs_]:
        return {}
    resolved = dict(recorded)
    for key in ("run_weights", "shrink"):
        if isinstance(recorded.get(key), dict) and "confidence" not in recorded[key]:
            resolved[key] = {str(Path(k).resolve()): v for k, v in recorded[key].items()}
    resolved["left_out"] = [str(Path(k).resolve()) for k in recorded.get("left_out") or []]
    return resolved


def _oof_as_predicted(run: Run, recorded: dict) -> pd.DataFrame | None:
    """A run's pooled OOF without the folds predict left out, each fold shrunk towards the class
    shares of the run's other folds by the weight predict recorded (predict.shrink_folds)."""
    frames = {f.path.name: f.oof for f in run.oof_folds if str(f.path.resolve()) not in recorded.get("left_out", [])}
    weights = recorded.get("shrink") or {}
    shrunk = {}
    for f in run.oof_folds:
        w = weights.get(str(f.path.resolve()))
        if w is not None and f.path.name in frames:
            shrunk[f.path.name] = shrunk_oof(frames[f.path.name], run.classes,
                                             fold_priors(frames, f.path.name, len(run.classes)), w)
    return pool_folds(frames | shrunk, run.classes)


# --------------------------------------------------------------------------- plots (matplotlib, Agg)
def plot_learning_curves(fold: FoldRun, n_classes: int) -> bytes | None:
    """Loss, accuracy and learning rate against epoch; phase-2 start, best epoch and ln(classes) marked."""
    h = fold.history
    if h is None or h.empty:
        return None
    fig = _figure(12, 3.6)
    axes = fig.subplots(1, 3)
    x = h["epoch"]
    boundary = None
    if "phase" in h.columns and (h["phase"] == 1).any() and (h["phase"] == 2).any():
        boundary = h.loc[h["phase"] == 1, "epoch"].max() + 0.5
    best = fold.state.get("best_epoch")
    if best is None and "val_loss" in h.columns and h["val_loss"].notna().any():
        best = int(h.loc[h["val_loss"].idxmin(), "epoch"])
    panels = [("loss", "log loss", "Loss"), ("accuracy", "accuracy", "Accuracy")]
    for ax, (key, ylabel, title) in zip(axes, panels):
        if key in h.columns:
            ax.plot(x, h[key], "o-", ms=3, color="tab:blue", label=f"train {key}")
        if f"val_{key}" in h.columns:
            ax.plot(x, h[f"val_{key}"], "o-", ms=3, color="tab:orange", label=f"validation {key}")
        if key == "loss":
            ax.axhline(uniform_log_loss(n_classes), color="grey", lw=0.8, ls=":",
                       label=f"uniform 1/{n_classes} ({uniform_log_loss(n_classes):.3f})")
        ax.set_title(f"{title} — fold {fold.fold}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_lr = axes[2]
    if "learning_rate" in h.columns and h["learning_rate"].notna().any():
        ax_lr.plot(x, h["learning_rate"], "o-", ms=3, color="tab:green", label="learning rate")
        if (h["learning_rate"].dropna() > 0).all():
            ax_lr.set_yscale("log")
    ax_lr.set_title(f"Learning rate — fold {fold.fold}")
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    for ax in axes:
        if boundary is not None:
            ax.axvline(boundary, color="black", ls="--", lw=1, label="phase 2 (fine-tune) starts")
        if best is not None:
            ax.axvline(best, color="tab:red", ls=":", lw=1.5, label=f"best epoch ({best})")
    if best is not None and "val_loss" in h.columns:
        at_best = h.loc[h["epoch"] == best, "val_loss"]
        if len(at_best) and pd.notna(at_best.iloc[0]):
            axes[0].plot([best], [at_best.iloc[0]], "*", ms=14, color="tab:red", zorder=5)
    for ax in axes:
        ax.legend(fontsize=7, loc="best")
    return _png(fig)


def plot_confusion(cm: np.ndarray, classes, title: str) -> bytes:
    """Counts and row-normalised (recall) confusion matrices side by side. Beyond PLOT_CLASSES
    classes only the most confused are drawn (rows still normalised over all predictions)."""
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    shown = title
    if len(classes) > PLOT_CLASSES:
        keep = most_confused(cm)
        cm, norm = cm[np.ix_(keep, keep)], norm[np.ix_(keep, keep)]
        classes = [classes[i] for i in keep]
        shown = f"{title} ({len(keep)} most confused of {rows.shape[0]} classes)"
    n = len(classes)
    small = n <= 10
    fig = _figure(12, 5.4) if small else _figure(16, 8)
    axes = fig.subplots(1, 2)
    for ax, data, kind in ((axes[0], cm, "counts"), (axes[1], norm, "row-normalised (each true class sums to 1)")):
        im = ax.imshow(data, cmap="Blues", vmin=0, vmax=max(data.max(), 1e-9))
        ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=None if small else 7)
        ax.set_yticks(range(n), classes, fontsize=None if small else 7)
        ax.set_xlabel("predicted class (argmax)")
        ax.set_ylabel("true class")
        ax.set_title(f"{shown}: {kind}", fontsize=10)
        cut = data.max() / 2
        for i in range(n):
            for j in range(n):
                if not small and data[i, j] == 0:
                    continue  # many classes: zeros would only bury the mistakes
                text = f"{data[i, j]:d}" if data is cm else f"{data[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8 if small else 6,
                        color="white" if data[i, j] > cut else "black")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(fig)


def plot_per_class(table: pd.DataFrame, title: str) -> bytes:
    """Log loss and accuracy per true class; beyond PLOT_CLASSES classes, the costliest ones."""
    n_classes = len(table)
    if n_classes > PLOT_CLASSES:
        table = table.nlargest(PLOT_CLASSES, "loss_contribution")
        title = f"{title} ({PLOT_CLASSES} costliest of {n_classes} classes)"
    fig = _figure(12, 3.8 if len(table) <= 10 else 5)
    axes = fig.subplots(1, 2)
    x = np.arange(len(table))
    sep = "\n" if len(table) <= 10 else " "  # many rotated labels: one line each
    labels = [f"{c}{sep}(n={n})" for c, n in zip(table["class"], table["images"])]
    axes[0].bar(x, table["log_loss"].fillna(0), color="tab:orange")
    axes[0].axhline(uniform_log_loss(n_classes), color="grey", ls=":", lw=1,
                    label=f"uniform 1/{n_classes} ({uniform_log_loss(n_classes):.3f})")
    axes[0].set_ylabel("mean log loss of its images")
    axes[0].set_title(f"{title}: log loss per true class", fontsize=10)
    axes[0].legend(fontsize=8)
    axes[1].bar(x, table["accuracy"].fillna(0), color="tab:blue")
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("accuracy (recall)")
    axes[1].set_title(f"{title}: accuracy per true class", fontsize=10)
    for ax in axes:
        if len(table) <= 10:
            ax.set_xticks(x, labels, fontsize=8)
        else:
            ax.set_xticks(x, labels, fontsize=6, rotation=60, ha="right")
        ax.set_xlabel("true class")
        ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_reliability(before: tuple[pd.DataFrame, float, float], after: tuple[pd.DataFrame, float, float] | None,
                     after_name: str, title: str) -> bytes:
    """Reliability diagrams (accuracy against top-1 confidence) before and after predict's
    calibration; `after` None (no calibration yet) draws the first only."""
    first = "before calibration" if after is not None else "not calibrated yet (run ncfm predict)"
    panels = [(before, first)] + ([(after, after_name)] if after is not None else [])
    fig = _figure(12 if after is not None else 6.5, 4.6)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for ax, ((table, ece, loss), name) in zip(axes, panels):
        centers = (table["lo"] + table["hi"]) / 2
        width = table["hi"] - table["lo"]
        filled = table["images"] > 0
        ax.bar(centers[filled], table["accuracy"][filled], width=width[filled] * 0.95, color="tab:blue",
               alpha=0.8, edgecolor="black", lw=0.5, label="accuracy in bin")
        ax.plot(table["confidence"][filled], table["accuracy"][filled], "o", color="tab:red", ms=4,
                label="(mean confidence, accuracy)")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
        for c, a, n in zip(centers[filled], table["accuracy"][filled], table["images"][filled]):
            ax.text(c, 0.015, f"n={n}", ha="center", va="bottom", fontsize=7,
                    color="white" if a > 0.08 else "black")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top-1 confidence (max probability)")
        ax.set_title(f"{title}: {name}\nlog loss {loss:.4f}, ECE {ece:.3f}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("accuracy (fraction correct in bin)")
    return _png(fig)


# --------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1240px;color:#222;padding:0 12px}
h1{font-size:1.5em} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em} h3{margin-top:1.5em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:0.92em}
th,td{border:1px solid #ccc;padding:3px 9px} th{background:#f3f3f3} td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.total td{font-weight:bold;background:#fafafa} tr.base td{color:#555;font-style:italic}
img{max-width:100%;height:auto;display:block;margin:6px 0 14px}
.notes{background:#fff8e1;border:1px solid #f0d98c;padding:6px 14px} .muted{color:#666;font-size:0.9em}
#img-status.bad{background:#fdd;border:1px solid #c00;padding:6px}
"""

# Sets <body data-images="ok"> once every image has decoded (a headless browser test reads it)
# and shows a visible warning otherwise.
_IMG_CHECK = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
  document.body.setAttribute('data-images', bad.length ? 'broken' : 'ok');
  document.body.setAttribute('data-images-loaded', String(imgs.length - bad.length));
  if (bad.length) {
    var s = document.getElementById('img-status');
    s.className = 'bad';
    s.textContent = bad.length + ' of ' + imgs.length + ' images failed to load';
  }
});
"""

def _runs_used(cal: dict) -> str:
    """The runs predict ensembled (calibration.json), the rule it applied to folds no better than the
    priors (--weak-folds) and the folds that rule left out or the weights it shrank them by."""
    used = ", ".join(Path(str(r)).name for r in cal.get("runs") or []) or "?"
    if cal.get("left_out"):
        used += " without " + ", ".join("/".join(Path(str(f)).parts[-2:]) for f in cal["left_out"])
    if cal.get("weak_folds"):
        used += f"; --weak-folds {cal['weak_folds']}"
    if cal.get("shrink"):
        used += " (" + ", ".join(f"{'/'.join(Path(str(f)).parts[-2:])} x{w:.2f}" for f, w in cal["shrink"].items()) + ")"
    return used


def _calibration_rows(s: dict, slug: str, base) -> list[str]:
    """The lower rows of the CV table: what predict recorded, and its calibration applied to this run."""
    cal, o = s["calibration_json"], s["oof"]
    file = runs.calibration_path(s["run"]).name
    if cal is None:
        return [base("calibration: not calibrated yet (run ncfm predict)")]
    used = _runs_used(cal)
    metric = METRIC_NAMES.get(cal.get("metric"), str(cal.get("metric", "?")))
    rows = []
    if "oof_score" in cal:
        rows.append(base(f"{file}: predict's OOF {metric} before calibration (runs {used}, {cal.get('tta', '?')} "
                         f"views)", _fmt(cal["oof_score"]), f"{slug}-predict-score"))
    if cal.get("method", "none") == "none":
        scored_by = cal.get("metric", "log_loss")
        why = f"the competition is scored by {metric}" if scored_by != "log_loss" else "--calibrate none"
        rows.append(base(f"{file}: predict did not calibrate ({why})"))
    else:
        fitted = f"T = {_fmt(cal.get('temperature'), 3)}, floor = {_fmt(cal.get('floor'), 4)}"
        if "oof_score" not in cal:
            rows.append(base(f"{file}: OOF log loss before calibration", _fmt(cal.get("before"))))
        verdict = "applied" if cal.get("applied", True) else "not applied"
        held = f"; on held-out {cal.get('held_out_by', '?')}: {_fmt(cal['held_out'])}" if "held_out" in cal else ""
        rows.append(base(f"{file}: after {cal['method']} {fitted} ({verdict}{held})", _fmt(cal.get("after"))))
        rejected = cal.get("rejected")
        if isinstance(rejected, dict):
            rows.append(base(f"{file}: rejected fit T = {_fmt(rejected.get('temperature'), 3)}, floor = "
                             f"{_fmt(rejected.get('floor'), 4)} (better on the rows it was fitted on, worse held out: "
                             f"it fits noise)", _fmt(rejected.get("after"))))
    blend = cal.get("run_weights") or {}
    if isinstance(blend.get("confidence"), dict):
        fit = blend["confidence"]
        rows.append(base(f"{file}: {Path(str(blend.get('crop_run'))).name} blended with "
                         f"{Path(str(blend.get('whole_run'))).name} per image by the detector's confidence "
                         f"(weight logistic({_fmt(fit.get('a'), 3)} * logit(best box score) + {_fmt(fit.get('b'), 3)}); "
                         f"{_fmt(blend.get('mean_test_weight'), 2)} on average over the test images)"))
    if cal.get("clip"):
        rows.append(base(f"{file}: manual floor --clip {cal['clip']:g} applied after calibration"))
    if o is not None and o["calibrated_log_loss"] is not None:
        rows.append(base(f"this run's OOF after predict's calibration (T = {o['temperature']:.3f}, floor = "
                         f"{o['floor']:.4f})", _fmt(o["calibrated_log_loss"]), f"{slug}-calibrated-log-loss",
                         o["images"]))
    return rows


def _cv_table(s: dict, slug: str) -> str:
    auc = s["binary"]
    head = ("<tr><th>fold</th><th>images</th><th>OOF log loss</th><th>accuracy</th>"
            + ("<th>ROC AUC</th>" if auc else "") + "<th>class-prior baseline</th><th>best epoch</th><th>best val loss</th><th>status</th></tr>")

    def base(text, value="", cell_id=None, images=""):
        """A row of the lower part: a label and one number, in the log-loss column."""
        return ('<tr class="base">' + _td(text, numeric=False) + _td(images) + _td(value, cell_id)
                + _td("") * (5 if auc else 4) + _td("", numeric=False) + "</tr>")

    rows = []
    for r in s["folds"]:
        k = r["fold"]
        rows.append("<tr>" + _td(f"fold{k}", numeric=False) + _td(r["images"] if r["images"] is not None else "—")
                    + _td(_fmt(r["log_loss"]), f"{slug}-fold{k}-log-loss")
                    + _td(_pct(r["accuracy"]), f"{slug}-fold{k}-accuracy")
                    + (_td(_fmt(r["roc_auc"], 4), f"{slug}-fold{k}-roc-auc") if auc else "")
                    + _td(_fmt(r["prior_baseline"]))
                    + _td(r["best_epoch"] if r["best_epoch"] is not None else "—")
                    + _td(_fmt(r["best_val_loss"])) + _td(r["status"], numeric=False) + "</tr>")
    o = s["oof"]
    if o is not None:
        n_done, n_all = len(o["folds"]), s["n_folds"]
        label = "all OOF" if n_done == n_all else f"OOF of {n_done}/{n_all} folds"
        rows.append('<tr class="total">' + _td(label, numeric=False) + _td(o["images"])
                    + _td(_fmt(o["log_loss"]), f"{slug}-oof-log-loss") + _td(_pct(o["accuracy"]), f"{slug}-oof-accuracy")
                    + (_td(_fmt(o["roc_auc"], 4), f"{slug}-oof-roc-auc") if auc else "")
                    + _td(_fmt(o["prior_baseline"])) + _td("") + _td("") + _td("", numeric=False) + "</tr>")
        if o["fold_std_log_loss"] is not None:
            rows.append(base("mean ± sd of folds", f"{o['fold_mean_log_loss']:.5f} ± {o['fold_std_log_loss']:.5f}",
                             f"{slug}-fold-mean-log-loss"))
        n = len(s["classes"])
        rows.append(base("class-prior baseline (predict the OOF class shares, one image of each class added)",
                         _fmt(o["prior_baseline"]),
                         f"{slug}-prior-baseline", o["images"]))
        rows.append(base(f"uniform baseline (1/{n} each = ln {n})", _fmt(o["uniform_baseline"]),
                         f"{slug}-uniform-baseline", o["images"]))
    rows += _calibration_rows(s, slug, base)
    return f'<table id="{slug}-cv">{head}{"".join(rows)}</table>'


def _per_class_html(table: pd.DataFrame) -> str:
    head = ("<tr><th>class</th><th>images</th><th>share</th><th>mean log loss</th><th>share of total loss</th>"
            "<th>accuracy (recall)</th><th>precision</th><th>mean predicted prob</th></tr>")
    rows = ["<tr>" + _td(r["class"], numeric=False) + _td(r["images"]) + _td(_pct(r["share"]))
            + _td(_fmt(r["log_loss"], 4)) + _td(_fmt(r["loss_contribution"], 4)) + _td(_pct(r["accuracy"]))
            + _td(_pct(r["precision"])) + _td(_fmt(r["mean_prob"], 3)) + "</tr>" for _, r in table.iterrows()]
    return f"<table>{head}{''.join(rows)}</table>"


def _comparison_html(summaries: list[dict], ensemble: dict | None) -> str:
    head = "<tr><th></th>" + "".join(f"<th>{html.escape(s['name'])}</th>" for s in summaries) + "</tr>"
    auc = any(s["binary"] for s in summaries)
    fields = [("folds with OOF", lambda o, s: f"{len(o['folds'])}/{s['n_folds']}"),
              ("OOF images", lambda o, s: o["images"]),
              ("OOF log loss", lambda o, s: _fmt(o["log_loss"])),
              ("OOF accuracy", lambda o, s: _pct(o["accuracy"])),
              *([("OOF ROC AUC", lambda o, s: _fmt(o.get("roc_auc"), 4))] if auc else []),
              ("after predict's calibration", lambda o, s: _fmt(o["calibrated_log_loss"])),
              ("predict's temperature", lambda o, s: _fmt(o["temperature"], 3)),
              ("class-prior baseline", lambda o, s: _fmt(o["prior_baseline"])),
              ("uniform baseline", lambda o, s: _fmt(o["uniform_baseline"])),
              ("model", None)]
    rows = []
    for label, get in fields:
        cells = []
        for s in summaries:
            if get is None:
                cells.append(_td(s.get("model", "—"), numeric=False))
            else:
                cells.append(_td(get(s["oof"], s) if s["oof"] else "—"))
        rows.append(f"<tr><th>{label}</th>{''.join(cells)}</tr>")
    out = f'<table id="comparison">{head}{"".join(rows)}</table>'
    if ensemble is None:
        out += "<p>Ensemble: needs at least two runs with out-of-fold predictions.</p>"
    elif ensemble["images"] == 0:
        out += f"<p>Ensemble: none; {html.escape(ensemble['problem'])}.</p>"
    else:
        cells = "".join(f"<tr><td>{html.escape(Path(r).name)} alone</td>{_td(_fmt(l))}{_td(_pct(a))}</tr>"
                        for r, l, a in zip(ensemble["runs"], ensemble["run_log_loss"], ensemble["run_accuracy"]))
        how = (f"as `ncfm predict` blended them: {ensemble['mean']} mean"
               + (", run weights " + ", ".join(f"{Path(r).name} {w:.3f}" for r, w in zip(ensemble["runs"], ensemble["run_weights"]))
                  if ensemble["run_weights"] else "")
               + ", its weak-fold rule applied" if ensemble["as_predicted"] else "mean of the runs' OOF probabilities")
        if ensemble.get("confidence_blend"):
            how += "; predict weighed each image by its detector score, shown here as the plain mean"
        out += (f"<h3>Ensemble ({html.escape(how)}, on the {ensemble['images']} images all runs predicted)</h3>"
                "<table><tr><th></th><th>log loss</th><th>accuracy</th></tr>" + cells
                + "<tr class=\"total\"><td>ensemble</td>" + _td(_fmt(ensemble["log_loss"]), "ensemble-log-loss")
                + _td(_pct(ensemble["accuracy"]), "ensemble-accuracy") + "</tr>"
                + "<tr class=\"base\"><td>class-prior baseline</td>" + _td(_fmt(ensemble["prior_baseline"]))
                + _td("") + "</tr></table>")
    return out


def members_summary(loaded: list[Run], grouped: list[Path]) -> pd.DataFrame | None:
    """One row per member (config, seed, fold) of the runs made of member groups (`grouped`):
    its status, OOF log loss, epochs trained and training time. None when no run is."""
    rows = []
    for run in loaded:
        group = runs.member_of(run.path)
        if group is None or run.path.parent not in grouped:
            continue
        for f in run.folds:
            y_p = _arrays(f.oof, run.classes) if f.oof is not None else None
            rows.append({"member": f"{run.path.name}/fold{f.fold}", "config": group[0], "seed": group[1],
                         "fold": f.fold, "status": f.status,
                         "oof_log_loss": kaggle_log_loss(*y_p) if y_p is not None else None,
                         "epochs": f.state.get("epoch"), "seconds": f.state.get("train_seconds")})
    return pd.DataFrame(rows) if rows else None


def _members_html(table: pd.DataFrame) -> str:
    head = ("<tr><th>member</th><th>config</th><th>seed</th><th>fold</th><th>status</th><th>OOF log loss</th>"
            "<th>epochs</th><th>time</th></tr>")
    rows = ["<tr>" + _td(r.member, numeric=False) + _td(r.config, numeric=False) + _td(r.seed) + _td(r.fold)
            + _td(r.status, numeric=False) + _td(_fmt(r.oof_log_loss), f"member-{r.member}-log-loss")
            + _td(r.epochs if pd.notna(r.epochs) else "—")
            + _td(f"{r.seconds:.0f} s" if pd.notna(r.seconds) else "—") + "</tr>" for r in table.itertuples()]
    return (f'<table id="members">{head}{"".join(rows)}</table><p class="muted">Every (config, seed, fold) of '
            f"<code>ncfm train --folds</code>; each config-seed group has its own section below.</p>")


# --------------------------------------------------------------------------- the report
def _reliability_html(run: Run, summary: dict, y: np.ndarray, p: np.ndarray, title: str, save) -> str:
    """Reliability before and after the calibration predict applied (none before predict has run)."""
    o, cal = summary["oof"], run.calibration
    before = (*reliability_table(y, p), o["log_loss"])
    o["ece_before"], o["ece_after"] = before[1], None
    if cal is None:
        text = (f"<p>Not calibrated yet (run <code>ncfm predict</code>): the diagram shows the OOF predictions as "
                f"the models made them. Expected calibration error {before[1]:.3f}.</p>")
        return text + save(plot_reliability(before, None, "", title), "reliability", "reliability diagram")
    after = (*reliability_table(y, apply_predicts_calibration(p, cal)), o["calibrated_log_loss"])
    o["ece_after"] = after[1]
    t, floor = o["temperature"], o["floor"]
    used = _runs_used(cal)
    if cal.get("method", "none") == "none":
        what, name = "predict did not calibrate (T = 1)", "after predict (not calibrated)"
    else:
        verdict = ("applied" if cal.get("applied", True) else
                   f"not applied: it did worse on held-out {cal.get('held_out_by', 'folds')}, so T = 1")
        what = (f"predict's {cal['method']} calibration, fitted on the OOF of {used} under {cal.get('tta', '?')} "
                f"views ({verdict}): T = {t:.3f}, floor = {floor:.4f} (T > 1 softens over-confident predictions)")
        name = f"after predict's T = {t:.3f}, floor = {floor:.4f}"
    text = (f"<p>{html.escape(what)}. Applied to this run's OOF it takes log loss {before[2]:.5f} → {after[2]:.5f} and the "
            f"expected calibration error {before[1]:.3f} → {after[1]:.3f}. Nothing is fitted here: the values are "
            f"those in <code>{html.escape(runs.calibration_path(run.path).name)}</code>.</p>")
    return text + save(plot_reliability(before, after, name, title), "reliability", "reliability diagram")


def _run_section(run: Run, summary: dict, slug: str, prefix: str, out_dir: Path, written: list[Path]) -> str:
    """One run's part of the page; writes its PNGs into out_dir."""

    save = _png_saver(out_dir, prefix, written)
    classes = run.classes
    parts = _run_header("Run", run, summary, slug, f"<p><b>Classes</b> ({len(classes)}, the models' output order): "
                                                   f"{html.escape(_class_list(classes))}</p>")
    parts += ["<h3>Cross-validation summary</h3>", _cv_table(summary, slug),
              '<p class="muted">Log loss is Kaggle\'s (rows renormalised, clipped to [1e-15, 1-1e-15]). '
              "A fold's class-prior baseline scores the pooled OOF class frequencies on that fold's images. "
              "The calibration lines are what <code>ncfm predict</code> recorded; the report fits nothing.</p>"]

    parts.append("<h3>Learning curves</h3>")
    for f in run.folds:
        png = plot_learning_curves(f, len(classes))
        if png is None:
            parts.append(f"<p>fold{f.fold}: no training history yet.</p>")
        else:
            parts.append(save(png, f"curves_fold{f.fold}", f"learning curves, fold {f.fold}"))

    oof = pooled_oof(run)
    if oof is None:
        parts.append("<p>No fold has out-of-fold predictions yet: confusion matrix, per-class and calibration "
                     "sections appear once a fold finishes.</p>")
        return "\n".join(parts)
    y, p = _arrays(oof, classes)
    title = f"{run.name} OOF"
    parts += ["<h3>Out-of-fold confusion matrix</h3>",
              save(plot_confusion(confusion_counts(y, p), classes, title), "confusion", "OOF confusion matrix")]
    table = per_class_table(y, p, classes)
    parts += ["<h3>Per-class log loss and accuracy</h3>", _per_class_html(table),
              save(plot_per_class(table, title), "per_class", "per-class log loss and accuracy")]
    parts += ["<h3>Calibration (reliability)</h3>", _reliability_html(run, summary, y, p, title, save)]
    return "\n".join(parts)


def _model_text(run: Run) -> str:
    c = next((f.config for f in run.folds if f.config), {})
    bits = [str(c[k]) for k in ("competition", "backbone") if c.get(k)]
    if c.get("image_size"):
        bits.append(f"{c['image_size']}px")
    if c.get("weights"):
        bits.append(f"weights {c['weights']}")
    if c.get("epochs"):
        bits.append(f"{c['epochs']} epochs ({c.get('head_epochs', '?')} head)")
    return ", ".join(bits)


def _loader(run_dir: Path):
    """The function that loads a run of its family for the report (runs.FAMILIES' `report`); a run whose
    config.json cannot be read is loaded as a classifier run, whose reader turns the damage into a note."""
    import importlib

    from ncfm.report_task import load_task_run, task_competition

    try:
        kind = runs.run_kind(run_dir) or runs.CLASSIFIER
    except NcfmError:
        kind = runs.CLASSIFIER
    if kind == runs.CLASSIFIER and (comp := task_competition(run_dir)) is not None:
        return lambda run, calibration_dir=None: load_task_run(run, comp, calibration_dir)
    module, name = runs.family(kind).report.split(":")
    return getattr(importlib.import_module(module), name)


def build_report(run_dirs: list[Path], out_dir: Path | None = None) -> dict:
    """Write report.html and its PNGs for one or more runs; return the numbers and the paths written.

    Returns {"runs": [per-run summary], "detectors": [per-detector-run summary], "ensemble":
    dict | None, "html": Path, "pngs": [Path]}, and "tasks": the summaries of runs whose answer is not one
    class per image (ncfm.report_task.summarize_task_run). Each (classifier) run summary holds "classes",
    "folds" (per-fold log_loss, accuracy, roc_auc for two classes, ...) and "oof" (pooled OOF
    log_loss, accuracy, prior_baseline, uniform_baseline, and predict's temperature, floor and
    calibrated_log_loss, None before predict has run), or "oof": None while no fold has finished.
    A detector run summary (summarize_detector_run) holds "folds" (per-fold recall@0.5, top1@0.5,
    best_iou, fish_auc, boxed_images, ...), their "mean", "pooled" and "grid" (the images drawn).
    """
    from ncfm.report_detect import _detector_model_text, _detector_section, summarize_detector_run
    from ncfm.report_task import TaskRun, summarize_task_run, task_section

    if not run_dirs:
        raise NcfmError("no run folder given; pass --run runs/NAME")
    # a run of many members (`ncfm train --folds --seeds/--config`) is its <config>-seed<S>/ groups
    given = [(Path(d), member) for d in run_dirs for member in runs.member_runs(Path(d))]
    # a detector run (ncfm detect) gets its own section; the classifier runs are compared and ensembled
    every = [_loader(member)(member, d) for d, member in given]
    loaded = [run for run in every if isinstance(run, Run)]
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dirs[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    every_summary = [summarize_run(run) | {"model": _model_text(run)} if isinstance(run, Run) else
                     summarize_task_run(run) | {"model": _model_text(run)} if isinstance(run, TaskRun) else
                     summarize_detector_run(run) | {"model": _detector_model_text(run)} for run in every]
    summaries = [s for run, s in zip(every, every_summary) if isinstance(run, Run)]
    detectors = [s for run, s in zip(every, every_summary) if not isinstance(run, (Run, TaskRun))]
    tasks = [s for run, s in zip(every, every_summary) if isinstance(run, TaskRun)]
    ensemble = ensemble_summary(loaded) if len(loaded) > 1 else None

    written: list[Path] = []
    sections = []
    used: set[str] = set()
    for i, (run, s) in enumerate(zip(every, every_summary)):
        prefix = "report_"
        if len(every) > 1:
            tag = re.sub(r"[^A-Za-z0-9_.-]", "_", run.name) or f"run{i}"
            tag = tag if tag not in used else f"{tag}{i}"
            used.add(tag)
            prefix = f"report_{tag}_"
        draw = _run_section if isinstance(run, Run) else task_section if isinstance(run, TaskRun) else _detector_section
        sections.append(draw(run, s, f"run{i}", prefix, out_dir, written))

    names = ", ".join(s["name"] for s in every_summary)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = [f"<h1>Report: {html.escape(names)}</h1>",
            f'<p class="muted">Generated {stamp} by <code>ncfm report</code>.</p>', '<div id="img-status"></div>']
    members = members_summary(loaded, [d for d, member in given if member != d])
    if members is not None:
        body += ["<h2>Members</h2>", _members_html(members)]
    if len(loaded) > 1:
        body += ["<h2>Runs side by side</h2>", _comparison_html(summaries, ensemble)]
    body += sections
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Report: {html.escape(names)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{_IMG_CHECK}</script>\n</body></html>\n")
    html_path = out_dir / "report.html"
    atomic_write_text(html_path, page)
    return {"runs": summaries, "detectors": detectors, "tasks": tasks, "ensemble": ensemble, "members": members,
            "html": html_path, "pngs": written}


def format_summary(result: dict) -> str:
    """The console version of the CV table(s)."""
    from ncfm.report_detect import _format_detector
    from ncfm.report_task import format_task

    lines = []
    for s in result.get("detectors", []):
        lines += _format_detector(s)
    for s in result.get("tasks", []):
        lines += format_task(s)
    for s in result["runs"]:
        auc = s["binary"]
        lines.append(f"{s['run']}  {s.get('model', '')}")
        lines.append(f"  {'fold':<22}{'images':>7}{'log loss':>10}{'accuracy':>10}"
                     + (f"{'ROC AUC':>9}" if auc else "") + f"{'best epoch':>12}  status")
        for r in s["folds"]:
            lines.append(f"  {'fold' + str(r['fold']):<22}{r['images'] if r['images'] is not None else '-':>7}"
                         f"{_fmt(r['log_loss']):>10}{_pct(r['accuracy']):>10}"
                         + (f"{_fmt(r['roc_auc'], 4):>9}" if auc else "")
                         + f"{r['best_epoch'] if r['best_epoch'] is not None else '-':>12}  {r['status']}")
        o = s["oof"]
        if o is None:
            lines.append("  no out-of-fold predictions yet")
        else:
            label = "all OOF" if len(o["folds"]) == s["n_folds"] else f"OOF of {len(o['folds'])}/{s['n_folds']} folds"
            lines.append(f"  {label:<22}{o['images']:>7}{_fmt(o['log_loss']):>10}{_pct(o['accuracy']):>10}"
                         + (f"{_fmt(o['roc_auc'], 4):>9}" if auc else ""))
            lines.append(f"  {'class-prior baseline':<22}{'':>7}{_fmt(o['prior_baseline']):>10}")
            lines.append(f"  {'uniform baseline':<22}{'':>7}{_fmt(o['uniform_baseline']):>10}")
            if o["temperature"] is not None:
                lines.append(f"  {'T=' + format(o['temperature'], '.3f') + ' (predict)':<22}{'':>7}"
                             f"{_fmt(o['calibrated_log_loss']):>10}")
        if s["calibration_json"] is None:
            lines.append("  not calibrated yet (run ncfm predict)")
        for note in s["notes"]:
            lines.append(f"  note: {note}")
    e = result.get("ensemble")
    if e and e.get("images"):
        lines.append(f"ensemble of {len(e['runs'])} runs on {e['images']} common OOF images: "
                     f"log loss {_fmt(e['log_loss'])}, accuracy {_pct(e['accuracy'])}")
    lines.append(f"report: {result['html']}")
    return "\n".join(lines)


def main(args) -> int:
    result = build_report([Path(r) for r in args.run], Path(args.out) if getattr(args, "out", None) else None)
    print(format_summary(result))
    return 0
