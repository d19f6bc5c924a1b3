"""The report of one or more runs: learning curves, OOF confusion, per-class loss, calibration, CV table.

    ncfm report --run runs/NAME [--run runs/OTHER] [--out FOLDER]

Reads only what `ncfm train` and `ncfm predict` leave in a run folder (fold<k>/config.json,
history.csv, state.json, oof.csv; calibration.json) and writes `report.html` plus the PNGs it
shows into the first run folder (or --out). The page is self-contained: every image is also
embedded as base64, so the HTML opens from disk, mailed or copied anywhere.

It is meant to run after every fold and after predict, so it is quick (a few seconds) and
works on a run that is still training: a fold without oof.csv is listed, not fatal. Only an
OOF file that is present but malformed stops it, because every number on the page rests on it.

All numbers are Kaggle's: `calibrate.kaggle_log_loss` (rows renormalised, clipped to 1e-15).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import CLASSES, NUM_CLASSES, NcfmError
from ncfm.calibrate import calibrate, fit_calibration, kaggle_log_loss, per_sample_log_loss
from ncfm.fileio import atomic_write_bytes, atomic_write_text

UNIFORM_LOG_LOSS = math.log(NUM_CLASSES)  # 2.07944: predicting 1/8 for every class
RELIABILITY_BINS = 10
_FOLD_DIR = re.compile(r"^fold(\d+)$")


# --------------------------------------------------------------------------- reading a run
@dataclass
class FoldRun:
    """What one fold<k>/ folder holds; any part may be missing while the fold trains."""

    fold: int
    path: Path
    config: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    history: pd.DataFrame | None = None
    oof: pd.DataFrame | None = None

    @property
    def status(self) -> str:
        if self.state.get("finished"):
            return "finished"
        epoch = self.state.get("epoch")
        total = self.config.get("epochs")
        if epoch is None:
            return "not started" if self.history is None else "training"
        return f"training (epoch {epoch}/{total})" if total else f"training (epoch {epoch})"


@dataclass
class Run:
    path: Path
    folds: list[FoldRun]
    calibration: dict | None = None  # calibration.json written by predict, if any
    scheme: dict = field(default_factory=dict)  # the fold/group scheme (see read_fold_scheme)
    notes: list[str] = field(default_factory=list)  # things a reader should know (missing files, ...)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def oof_folds(self) -> list[FoldRun]:
        """The folds that have out-of-fold predictions."""
        return [f for f in self.folds if f.oof is not None]


def _read_json(path: Path, notes: list[str]) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        notes.append(f"{path}: unreadable JSON ({e}); ignored")
        return {}
    return data if isinstance(data, dict) else {}


def read_oof(path: Path) -> pd.DataFrame:
    """Read and check an oof.csv; returns it with an integer `y` column (index into CLASSES)."""
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise NcfmError(f"{path}: cannot read out-of-fold predictions ({e}); rerun `ncfm train` for this fold") from e
    missing = [c for c in ("image", "label", *CLASSES) if c not in df.columns]
    if missing:
        raise NcfmError(f"{path}: missing column(s) {', '.join(missing)}; expected image,label,{','.join(CLASSES)}")
    labels = df["label"].astype(str)
    index = {c: i for i, c in enumerate(CLASSES)} | {str(i): i for i in range(NUM_CLASSES)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise NcfmError(f"{path}: unknown label(s) {unknown[:5]}; labels must be one of {', '.join(CLASSES)}")
    probs = df[list(CLASSES)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1) | (probs.sum(axis=1) <= 0)
    if bad.any():
        first = df["image"].iloc[int(np.argmax(bad))]
        raise NcfmError(f"{path}: {int(bad.sum())} row(s) with NaN, negative or all-zero probabilities "
                        f"(first: {first}); rerun `ncfm train` for this fold")
    df = df.copy()
    df["y"] = labels.map(index).astype(np.int64)
    return df


def _read_history(path: Path, notes: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        notes.append(f"{path}: unreadable ({e}); learning curves skipped")
        return None
    if "epoch" not in df.columns or df.empty:
        return None
    for col in df.columns:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df.dropna(subset=["epoch"]).sort_values("epoch").reset_index(drop=True)


def read_fold_scheme(run_path: Path, config: dict) -> dict:
    """How the folds were made: the manifest path, its sidecar JSON and a group-leak check.

    `folds_csv` in config.json is usually relative to where `ncfm train` ran (the project
    root), so it is looked for there, beside the runs/ folder, and as given.
    """
    scheme: dict = {"n_folds": config.get("n_folds")}  # config's `seed` is the training seed, not the split's
    given = config.get("folds_csv") or (Path(config["data_dir"]) / "folds.csv" if config.get("data_dir") else None)
    if not given:
        return scheme
    given = Path(given)
    scheme["folds_csv"] = str(given)
    candidates = [given] if given.is_absolute() else [given, run_path.resolve().parent.parent / given]
    manifest = next((p for p in candidates if p.is_file()), None)
    sidecar = next((p.with_suffix(".json") for p in candidates if p.with_suffix(".json").is_file()), None)
    if sidecar is not None:
        scheme["sidecar"] = _read_json(sidecar, [])
    if manifest is not None:
        try:
            df = pd.read_csv(manifest, usecols=lambda c: c in ("image", "fold", "group"))
        except (OSError, ValueError):
            return scheme
        scheme["manifest_images"] = len(df)
        if "group" in df.columns and "fold" in df.columns:
            folds_per_group = df.groupby("group")["fold"].nunique()
            scheme["n_groups"] = int(len(folds_per_group))
            scheme["groups_spanning_folds"] = int((folds_per_group > 1).sum())
    return scheme


def _n_folds(folds: list[FoldRun]) -> int:
    """Folds the run is meant to have: config.json's n_folds, or at least the folders present."""
    declared = [f.config.get("n_folds") for f in folds]
    return max([len(folds)] + [int(n) for n in declared if isinstance(n, (int, float, str)) and str(n).isdigit()])


def load_run(run_dir: Path) -> Run:
    """Read a run folder. Raises NcfmError only when it is not a run folder at all."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NcfmError(f"{run_dir}: no such run folder; pass a folder written by `ncfm train --run`")
    fold_dirs = sorted(
        (int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _FOLD_DIR.match(p.name))
    )
    if not fold_dirs:
        raise NcfmError(f"{run_dir}: no fold<k>/ folders; train a fold first (`ncfm train --run {run_dir} --fold 0`)")
    notes: list[str] = []
    folds = []
    for k, path in fold_dirs:
        fr = FoldRun(k, path, _read_json(path / "config.json", notes), _read_json(path / "state.json", notes),
                     _read_history(path / "history.csv", notes))
        if (path / "oof.csv").is_file():
            fr.oof = read_oof(path / "oof.csv")
            if fr.oof.empty:
                fr.oof = None
                notes.append(f"fold{k}: oof.csv has no rows; left out of the OOF numbers")
        else:
            notes.append(f"fold{k}: no oof.csv yet ({fr.status}); left out of the OOF numbers")
        folds.append(fr)
    config = next((f.config for f in folds if f.config), {})
    n_folds = _n_folds(folds)
    if len(folds) < n_folds:
        present = {f.fold for f in folds}
        notes.append(f"folds not started: {', '.join(f'fold{k}' for k in range(n_folds) if k not in present)}")
    run = Run(run_dir, folds, _read_json(run_dir / "calibration.json", notes) or None,
              read_fold_scheme(run_dir, config), notes)
    seen = pd.concat([f.oof["image"] for f in run.oof_folds]) if run.oof_folds else pd.Series([], dtype=str)
    if seen.duplicated().any():
        notes.append(f"{int(seen.duplicated().sum())} image(s) appear in more than one fold's oof.csv "
                     f"(e.g. {seen[seen.duplicated()].iloc[0]}); the folds manifests differ")
    return run



def pooled_oof(run: Run) -> pd.DataFrame | None:
    """Every fold's OOF rows stacked, with a `fold` column; None when no fold has finished."""
    frames = [f.oof.assign(fold=f.fold) for f in run.oof_folds]
    return pd.concat(frames, ignore_index=True) if frames else None


# --------------------------------------------------------------------------- numbers (pure)
def _arrays(oof: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    probs = oof[list(CLASSES)].to_numpy(dtype=np.float64)
    return oof["y"].to_numpy(dtype=np.int64), probs / probs.sum(axis=1, keepdims=True)


def class_frequencies(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels, minlength=NUM_CLASSES) / max(len(labels), 1)


def prior_baseline(labels: np.ndarray, freqs: np.ndarray | None = None) -> float:
    """Log loss of predicting the class frequencies (of `labels` unless given) for every image."""
    freqs = class_frequencies(labels) if freqs is None else freqs
    return kaggle_log_loss(labels, np.tile(freqs, (len(labels), 1)))


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean(probs.argmax(axis=1) == labels))


def confusion_counts(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(true, predicted) counts, rows and columns in CLASSES order."""
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(cm, (labels, probs.argmax(axis=1)), 1)
    return cm


def per_class_table(labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Per true class: support, mean log loss, its share of the total loss, accuracy (recall), precision."""
    losses = per_sample_log_loss(labels, probs)
    preds = probs.argmax(axis=1)
    rows = []
    for i, name in enumerate(CLASSES):
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


def summarize_run(run: Run) -> dict:
    """The CV numbers of one run: per fold, pooled OOF, baselines and the OOF-fitted temperature."""
    oof = pooled_oof(run)
    freqs = None
    n_folds = _n_folds(run.folds)
    summary: dict = {"run": str(run.path), "name": run.name, "n_folds": n_folds, "folds": [], "oof": None,
                     "scheme": run.scheme, "calibration_json": run.calibration, "notes": run.notes}
    if oof is not None:
        y, p = _arrays(oof)
        freqs = class_frequencies(y)
        cal = fit_calibration(y, p, method="temperature")
        summary["oof"] = {
            "folds": [f.fold for f in run.oof_folds],
            "images": len(y),
            "log_loss": kaggle_log_loss(y, p),
            "accuracy": accuracy(y, p),
            "fold_mean_log_loss": None,
            "fold_std_log_loss": None,
            "uniform_baseline": kaggle_log_loss(y, np.ones_like(p)),
            "prior_baseline": prior_baseline(y),
            "class_frequencies": dict(zip(CLASSES, map(float, freqs))),
            "temperature": cal["temperature"],
            "calibrated_log_loss": cal["after"],
        }
    for f in run.folds:
        row = {"fold": f.fold, "status": f.status, "images": None, "log_loss": None, "accuracy": None,
               "prior_baseline": None, "best_epoch": f.state.get("best_epoch"),
               "best_val_loss": f.state.get("best_val_loss"), "epoch": f.state.get("epoch")}
        if f.oof is not None:
            y, p = _arrays(f.oof)
            row.update(images=len(y), log_loss=kaggle_log_loss(y, p), accuracy=accuracy(y, p),
                       prior_baseline=prior_baseline(y, freqs))
        summary["folds"].append(row)
    scored = [r["log_loss"] for r in summary["folds"] if r["log_loss"] is not None]
    if summary["oof"] is not None:
        summary["oof"]["fold_mean_log_loss"] = float(np.mean(scored))
        summary["oof"]["fold_std_log_loss"] = float(np.std(scored, ddof=1)) if len(scored) > 1 else None
    return summary


def ensemble_oof(runs: list[Run]) -> dict | None:
    """Average the runs' OOF probabilities over the images every run predicted; None if < 2 runs have OOF."""
    pooled = [(run, pooled_oof(run)) for run in runs]
    pooled = [(run, df) for run, df in pooled if df is not None]
    if len(pooled) < 2:
        return None
    common = set.intersection(*(set(df["image"]) for _, df in pooled))
    if not common:
        return {"images": 0, "runs": [str(r.path) for r, _ in pooled]}
    aligned = [df[df["image"].isin(common)].drop_duplicates("image").set_index("image").sort_index()
               for _, df in pooled]
    y = aligned[0]["y"].to_numpy()
    for (run, _), df in zip(pooled, aligned):
        if not np.array_equal(df["y"].to_numpy(), y):
            bad = df.index[df["y"].to_numpy() != y][0]
            raise NcfmError(f"{run.path}: label of {bad} differs from {pooled[0][0].path}; "
                            "the runs were trained on different manifests")
    probs = [_arrays(df.reset_index())[1] for df in aligned]
    mean = np.mean(probs, axis=0)
    return {
        "images": len(y),
        "runs": [str(r.path) for r, _ in pooled],
        "run_log_loss": [kaggle_log_loss(y, p) for p in probs],
        "run_accuracy": [accuracy(y, p) for p in probs],
        "log_loss": kaggle_log_loss(y, mean),
        "accuracy": accuracy(y, mean),
        "prior_baseline": prior_baseline(y),
        "calibrated_log_loss": fit_calibration(y, mean, method="temperature")["after"],
    }


# --------------------------------------------------------------------------- plots (matplotlib, Agg)
def _figure(width: float, height: float):
    # The object API with an explicit Agg canvas: headless, and no pyplot global state, so
    # calling this from inside training leaks no figures and changes no backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_learning_curves(fold: FoldRun) -> bytes | None:
    """Loss, accuracy and learning rate against epoch; phase-2 start and best epoch marked."""
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
            ax.axhline(UNIFORM_LOG_LOSS, color="grey", lw=0.8, ls=":", label="uniform 1/8 (2.079)")
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


def plot_confusion(cm: np.ndarray, title: str) -> bytes:
    """Counts and row-normalised (recall) confusion matrices side by side."""
    fig = _figure(12, 5.4)
    axes = fig.subplots(1, 2)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    for ax, data, kind in ((axes[0], cm, "counts"), (axes[1], norm, "row-normalised (each true class sums to 1)")):
        im = ax.imshow(data, cmap="Blues", vmin=0, vmax=max(data.max(), 1e-9))
        ax.set_xticks(range(NUM_CLASSES), CLASSES, rotation=45, ha="right")
        ax.set_yticks(range(NUM_CLASSES), CLASSES)
        ax.set_xlabel("predicted class (argmax)")
        ax.set_ylabel("true class")
        ax.set_title(f"{title}: {kind}", fontsize=10)
        cut = data.max() / 2
        for i in range(NUM_CLASSES):
            for j in range(NUM_CLASSES):
                text = f"{data[i, j]:d}" if data is cm else f"{data[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if data[i, j] > cut else "black")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(fig)


def plot_per_class(table: pd.DataFrame, title: str) -> bytes:
    fig = _figure(12, 3.8)
    axes = fig.subplots(1, 2)
    x = np.arange(NUM_CLASSES)
    labels = [f"{c}\n(n={n})" for c, n in zip(table["class"], table["images"])]
    axes[0].bar(x, table["log_loss"].fillna(0), color="tab:orange")
    axes[0].axhline(UNIFORM_LOG_LOSS, color="grey", ls=":", lw=1, label="uniform 1/8 (2.079)")
    axes[0].set_ylabel("mean log loss of its images")
    axes[0].set_title(f"{title}: log loss per true class", fontsize=10)
    axes[0].legend(fontsize=8)
    axes[1].bar(x, table["accuracy"].fillna(0), color="tab:blue")
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("accuracy (recall)")
    axes[1].set_title(f"{title}: accuracy per true class", fontsize=10)
    for ax in axes:
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_xlabel("true class")
        ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_reliability(before: tuple[pd.DataFrame, float, float], after: tuple[pd.DataFrame, float, float],
                     temperature: float, title: str) -> bytes:
    """Reliability diagrams (accuracy against top-1 confidence) before and after temperature scaling."""
    fig = _figure(12, 4.6)
    axes = fig.subplots(1, 2, sharey=True)
    names = ("before calibration", f"after temperature T = {temperature:.3f}")
    for ax, (table, ece, loss), name in zip(axes, (before, after), names):
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


def _fmt(x, digits: int = 5) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}"


def _pct(x) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.1f}%"


def _td(text, cell_id: str | None = None, numeric: bool = True) -> str:
    attrs = (' class="n"' if numeric else "") + (f' id="{cell_id}"' if cell_id else "")
    return f"<td{attrs}>{html.escape(str(text))}</td>"


def _img(png: bytes, file_name: str, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" title="{html.escape(file_name)}">'
            f'<div class="muted">{html.escape(file_name)}</div>')


def _scheme_html(scheme: dict) -> str:
    items = []
    if scheme.get("folds_csv"):
        items.append(f"manifest <code>{html.escape(scheme['folds_csv'])}</code>"
                     + (f" ({scheme['manifest_images']} images)" if "manifest_images" in scheme else " (not found from here)"))
    sidecar = scheme.get("sidecar") or {}
    if sidecar:
        shown = []
        for key, value in sidecar.items():
            if isinstance(value, (list, dict)) and len(value) > 6:
                value = f"({type(value).__name__} of {len(value)})"
            shown.append(f"{key} {value if isinstance(value, str) else json.dumps(value)}")
        items.append("split settings: " + html.escape(", ".join(shown)))
    elif scheme.get("n_folds"):
        items.append(f"{scheme['n_folds']} folds (no split sidecar JSON found)")
    if "n_groups" in scheme:
        leak = scheme["groups_spanning_folds"]
        items.append(f"{scheme['n_groups']} groups, "
                     + ("each inside one fold" if not leak else f"<b>{leak} spanning more than one fold (leaky validation)</b>"))
    elif "manifest_images" in scheme:
        items.append("<b>no group column: folds are not group-aware, so validation loss is optimistic</b>")
    return "; ".join(items) if items else "unknown (no config.json found)"


def _cv_table(s: dict, slug: str) -> str:
    head = ("<tr><th>fold</th><th>images</th><th>OOF log loss</th><th>accuracy</th><th>class-prior baseline</th>"
            "<th>best epoch</th><th>best val loss</th><th>status</th></tr>")
    rows = []
    for r in s["folds"]:
        k = r["fold"]
        rows.append("<tr>" + _td(f"fold{k}", numeric=False) + _td(r["images"] if r["images"] is not None else "—")
                    + _td(_fmt(r["log_loss"]), f"{slug}-fold{k}-log-loss")
                    + _td(_pct(r["accuracy"]), f"{slug}-fold{k}-accuracy") + _td(_fmt(r["prior_baseline"]))
                    + _td(r["best_epoch"] if r["best_epoch"] is not None else "—")
                    + _td(_fmt(r["best_val_loss"])) + _td(r["status"], numeric=False) + "</tr>")
    o = s["oof"]
    if o is not None:
        n_done, n_all = len(o["folds"]), s["n_folds"]
        label = "all OOF" if n_done == n_all else f"OOF of {n_done}/{n_all} folds"
        rows.append('<tr class="total">' + _td(label, numeric=False) + _td(o["images"])
                    + _td(_fmt(o["log_loss"]), f"{slug}-oof-log-loss") + _td(_pct(o["accuracy"]), f"{slug}-oof-accuracy")
                    + _td(_fmt(o["prior_baseline"])) + _td("") + _td("") + _td("", numeric=False) + "</tr>")
        if o["fold_std_log_loss"] is not None:
            rows.append('<tr class="base">' + _td("mean ± sd of folds", numeric=False) + _td("")
                        + _td(f"{o['fold_mean_log_loss']:.5f} ± {o['fold_std_log_loss']:.5f}", f"{slug}-fold-mean-log-loss")
                        + _td("") * 4 + _td("", numeric=False) + "</tr>")
        base = [("class-prior baseline (predict the OOF class frequencies)", o["prior_baseline"], "prior-baseline"),
                ("uniform baseline (1/8 each = ln 8)", o["uniform_baseline"], "uniform-baseline"),
                (f"OOF after temperature T = {o['temperature']:.3f} (fitted on this OOF)", o["calibrated_log_loss"],
                 "calibrated-log-loss")]
        for text, value, key in base:
            rows.append('<tr class="base">' + _td(text, numeric=False) + _td(o["images"])
                        + _td(_fmt(value), f"{slug}-{key}") + _td("") * 4 + _td("", numeric=False) + "</tr>")
    cal = s["calibration_json"]
    if cal:
        rows.append('<tr class="base">' + _td("calibration.json (used by predict): "
                    f"T = {_fmt(cal.get('temperature'), 3)}, floor = {_fmt(cal.get('floor'), 4)}, before", numeric=False)
                    + _td("") + _td(_fmt(cal.get("before"))) + _td("") * 4 + _td("", numeric=False) + "</tr>")
        held = (f" (on held-out {cal['held_out_by']}: {_fmt(cal['held_out'])}; "
                f"{'applied' if cal.get('applied') else 'not applied'})" if "held_out" in cal else "")
        rows.append('<tr class="base">' + _td(f"calibration.json: after{held}", numeric=False) + _td("")
                    + _td(_fmt(cal.get("after"))) + _td("") * 4 + _td("", numeric=False) + "</tr>")
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
    fields = [("folds with OOF", lambda o, s: f"{len(o['folds'])}/{s['n_folds']}"),
              ("OOF images", lambda o, s: o["images"]),
              ("OOF log loss", lambda o, s: _fmt(o["log_loss"])),
              ("OOF accuracy", lambda o, s: _pct(o["accuracy"])),
              ("after temperature", lambda o, s: _fmt(o["calibrated_log_loss"])),
              ("temperature", lambda o, s: _fmt(o["temperature"], 3)),
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
        out += "<p>Ensemble: the runs share no OOF images.</p>"
    else:
        cells = "".join(f"<tr><td>{html.escape(Path(r).name)} alone</td>{_td(_fmt(l))}{_td(_pct(a))}</tr>"
                        for r, l, a in zip(ensemble["runs"], ensemble["run_log_loss"], ensemble["run_accuracy"]))
        out += (f"<h3>Ensemble (mean of the runs' OOF probabilities on the {ensemble['images']} images all runs predicted)</h3>"
                "<table><tr><th></th><th>log loss</th><th>accuracy</th></tr>" + cells
                + "<tr class=\"total\"><td>ensemble</td>" + _td(_fmt(ensemble["log_loss"]), "ensemble-log-loss")
                + _td(_pct(ensemble["accuracy"]), "ensemble-accuracy") + "</tr>"
                + "<tr class=\"base\"><td>ensemble after temperature</td>" + _td(_fmt(ensemble["calibrated_log_loss"]))
                + _td("") + "</tr><tr class=\"base\"><td>class-prior baseline</td>" + _td(_fmt(ensemble["prior_baseline"]))
                + _td("") + "</tr></table>")
    return out


# --------------------------------------------------------------------------- the report
def _run_section(run: Run, summary: dict, slug: str, prefix: str, out_dir: Path, written: list[Path]) -> str:
    """One run's part of the page; writes its PNGs into out_dir."""

    def save(png: bytes, stem: str, alt: str) -> str:
        path = out_dir / f"{prefix}{stem}.png"
        atomic_write_bytes(path, png)
        written.append(path)
        return _img(png, path.name, alt)

    parts = [f'<h2 id="{slug}">Run {html.escape(run.name)}</h2>',
             f'<p class="muted">{html.escape(str(run.path))} — {html.escape(summary.get("model", ""))}</p>',
             f"<p><b>Folds / groups:</b> {_scheme_html(run.scheme)}</p>"]
    if run.notes:
        parts.append('<div class="notes"><ul>' + "".join(f"<li>{html.escape(n)}</li>" for n in run.notes) + "</ul></div>")
    parts += ["<h3>Cross-validation summary</h3>", _cv_table(summary, slug),
              '<p class="muted">Log loss is Kaggle\'s (rows renormalised, clipped to [1e-15, 1-1e-15]). '
              "A fold's class-prior baseline scores the pooled OOF class frequencies on that fold's images. "
              "The temperature is fitted and scored on the same OOF rows, so that line is slightly optimistic.</p>"]

    parts.append("<h3>Learning curves</h3>")
    for f in run.folds:
        png = plot_learning_curves(f)
        if png is None:
            parts.append(f"<p>fold{f.fold}: no history.csv yet.</p>")
        else:
            parts.append(save(png, f"curves_fold{f.fold}", f"learning curves, fold {f.fold}"))

    oof = pooled_oof(run)
    if oof is None:
        parts.append("<p>No fold has out-of-fold predictions yet: confusion matrix, per-class and calibration "
                     "sections appear once a fold finishes.</p>")
        return "\n".join(parts)
    y, p = _arrays(oof)
    title = f"{run.name} OOF"
    parts += ["<h3>Out-of-fold confusion matrix</h3>", save(plot_confusion(confusion_counts(y, p), title),
                                                           "confusion", "OOF confusion matrix")]
    table = per_class_table(y, p)
    parts += ["<h3>Per-class log loss and accuracy</h3>", _per_class_html(table),
              save(plot_per_class(table, title), "per_class", "per-class log loss and accuracy")]
    t = summary["oof"]["temperature"]
    calibrated = calibrate(p, t)
    before = (*reliability_table(y, p), summary["oof"]["log_loss"])
    after = (*reliability_table(y, calibrated), summary["oof"]["calibrated_log_loss"])
    summary["oof"]["ece_before"], summary["oof"]["ece_after"] = before[1], after[1]
    parts += ["<h3>Calibration (reliability)</h3>",
              f"<p>Temperature fitted on the pooled OOF with <code>calibrate.fit_calibration</code>: T = {t:.3f} "
              f"(T &gt; 1 softens over-confident predictions). Log loss {before[2]:.5f} → {after[2]:.5f}; "
              f"expected calibration error {before[1]:.3f} → {after[1]:.3f}.</p>",
              save(plot_reliability(before, after, t, title), "reliability", "reliability diagram")]
    return "\n".join(parts)


def _model_text(run: Run) -> str:
    c = next((f.config for f in run.folds if f.config), {})
    bits = [str(c[k]) for k in ("backbone",) if c.get(k)]
    if c.get("image_size"):
        bits.append(f"{c['image_size']}px")
    if c.get("weights"):
        bits.append(f"weights {c['weights']}")
    if c.get("epochs"):
        bits.append(f"{c['epochs']} epochs ({c.get('head_epochs', '?')} head)")
    return ", ".join(bits)


def build_report(run_dirs: list[Path], out_dir: Path | None = None) -> dict:
    """Write report.html and its PNGs for one or more runs; return the numbers and the paths written.

    Returns {"runs": [per-run summary], "ensemble": dict | None, "html": Path, "pngs": [Path]}.
    Each run summary holds "folds" (per-fold log_loss, accuracy, ...) and "oof" (pooled OOF
    log_loss, accuracy, prior_baseline, uniform_baseline, temperature, calibrated_log_loss),
    or "oof": None while no fold has finished.
    """
    if not run_dirs:
        raise NcfmError("no run folder given; pass --run runs/NAME")
    runs = [load_run(Path(d)) for d in run_dirs]
    out_dir = Path(out_dir) if out_dir is not None else runs[0].path
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = [summarize_run(run) for run in runs]
    for run, s in zip(runs, summaries):
        s["model"] = _model_text(run)
    ensemble = ensemble_oof(runs) if len(runs) > 1 else None

    written: list[Path] = []
    sections = []
    used: set[str] = set()
    for i, (run, s) in enumerate(zip(runs, summaries)):
        prefix = "report_"
        if len(runs) > 1:
            tag = re.sub(r"[^A-Za-z0-9_.-]", "_", run.name) or f"run{i}"
            tag = tag if tag not in used else f"{tag}{i}"
            used.add(tag)
            prefix = f"report_{tag}_"
        sections.append(_run_section(run, s, f"run{i}", prefix, out_dir, written))

    names = ", ".join(s["name"] for s in summaries)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = [f"<h1>NCFM report: {html.escape(names)}</h1>",
            f'<p class="muted">Generated {stamp} by <code>ncfm report</code>. Classes in submission order: '
            f"{', '.join(CLASSES)}.</p>", '<div id="img-status"></div>']
    if len(runs) > 1:
        body += ["<h2>Runs side by side</h2>", _comparison_html(summaries, ensemble)]
    body += sections
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>NCFM report: {html.escape(names)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{_IMG_CHECK}</script>\n</body></html>\n")
    html_path = out_dir / "report.html"
    atomic_write_text(html_path, page)
    return {"runs": summaries, "ensemble": ensemble, "html": html_path, "pngs": written}


def format_summary(result: dict) -> str:
    """The console version of the CV table(s)."""
    lines = []
    for s in result["runs"]:
        lines.append(f"{s['run']}  {s.get('model', '')}")
        lines.append(f"  {'fold':<22}{'images':>7}{'log loss':>10}{'accuracy':>10}{'best epoch':>12}  status")
        for r in s["folds"]:
            lines.append(f"  {'fold' + str(r['fold']):<22}{r['images'] if r['images'] is not None else '-':>7}"
                         f"{_fmt(r['log_loss']):>10}{_pct(r['accuracy']):>10}"
                         f"{r['best_epoch'] if r['best_epoch'] is not None else '-':>12}  {r['status']}")
        o = s["oof"]
        if o is None:
            lines.append("  no out-of-fold predictions yet")
        else:
            label = "all OOF" if len(o["folds"]) == s["n_folds"] else f"OOF of {len(o['folds'])}/{s['n_folds']} folds"
            lines.append(f"  {label:<22}{o['images']:>7}{_fmt(o['log_loss']):>10}{_pct(o['accuracy']):>10}")
            lines.append(f"  {'class-prior baseline':<22}{'':>7}{_fmt(o['prior_baseline']):>10}")
            lines.append(f"  {'uniform baseline':<22}{'':>7}{_fmt(o['uniform_baseline']):>10}")
            lines.append(f"  {'T=' + format(o['temperature'], '.3f') + ' (OOF-fitted)':<22}{'':>7}"
                         f"{_fmt(o['calibrated_log_loss']):>10}")
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
