"""The pieces every report page is made of: run/fold loading shared by both kinds of run, figures to
PNG bytes, HTML cells and number formats.

ncfm.report (the page, and a classifier run's sections) and ncfm.report_detect (a detector run's
section) both build on these, so report_detect never imports report (report imports report_detect
only inside the functions that use it); this module imports neither.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ncfm import NcfmError, runs
from ncfm.fileio import atomic_write_bytes
from ncfm.folds import read_manifest


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
    classes: tuple[str, ...] | None = None  # as the fold records them; None: not recorded

    @property
    def status(self) -> str:
        if self.state.get("finished"):
            weak = self.state.get("no_better_than_priors")
            return "finished, no better than the class priors" if weak else "finished"
        epoch = self.state.get("epoch")
        total = self.config.get("epochs")
        if epoch is None:
            return "not started" if self.history is None else "training"
        return f"training (epoch {epoch}/{total})" if total else f"training (epoch {epoch})"


def _or_note(read, arg, notes: list[str], consequence: str):
    """read(arg), or None with a note when runs says the file is damaged."""
    try:
        return read(arg)
    except NcfmError as e:
        notes.append(f"{e} ({consequence})")
        return None


def _history(fold: runs.Fold, notes: list[str]) -> pd.DataFrame | None:
    df = _or_note(runs.read_history, fold, notes, "learning curves skipped")
    if df is None or df.empty:
        return None
    df = df.apply(pd.to_numeric, errors="coerce")  # a torn last line must not break the plot
    return df.dropna(subset=["epoch"]).sort_values("epoch").reset_index(drop=True)


def read_fold_scheme(run_path: Path, config: dict) -> dict:
    """How the folds were made: the manifest path, its sidecar JSON and a group-leak check.

    `folds_csv` in a fold's config is usually relative to where `ncfm train` ran (the project
    root), so it is looked for there, beside the runs/ folder, and as given. The manifest and
    its sidecar belong to the data folder, not the run.
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
        try:
            settings = json.loads(sidecar.read_text())
            scheme["sidecar"] = settings if isinstance(settings, dict) else {}
        except (OSError, ValueError):
            pass  # the split settings are a nicety; the manifest itself is checked below
    if manifest is not None:
        try:
            df, _ = read_manifest(manifest)
        except NcfmError as e:
            scheme["problem"] = str(e)
            return scheme
        scheme["manifest_images"] = len(df)
        if "group" in df.columns:
            folds_per_group = df.groupby("group")["fold"].nunique()
            scheme["n_groups"] = int(len(folds_per_group))
            scheme["groups_spanning_folds"] = int((folds_per_group > 1).sum())
    return scheme


def _n_folds(folds: list[FoldRun]) -> int:
    """Folds the run is meant to have: the configs' n_folds, or at least the folders present."""
    declared = [f.config.get("n_folds") for f in folds]
    return max([len(folds)] + [int(n) for n in declared if isinstance(n, (int, float, str)) and str(n).isdigit()])


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


# --------------------------------------------------------------------------- HTML
def _fmt(x, digits: int = 5) -> str:
    if not isinstance(x, numbers.Real) or isinstance(x, bool) or not math.isfinite(x):
        return "—"  # None, a NaN, or something a damaged file put there
    return f"{x:.{digits}f}"


def _pct(x) -> str:
    if not isinstance(x, numbers.Real) or isinstance(x, bool) or not math.isfinite(x):
        return "—"
    return f"{100 * x:.1f}%"


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
                     + (f" ({scheme['manifest_images']} images)" if "manifest_images" in scheme else
                        "" if "problem" in scheme else " (not found from here)"))
    if scheme.get("problem"):
        items.append(f"<b>{html.escape(scheme['problem'])}</b>")
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
    return "; ".join(items) if items else "unknown (no fold's settings could be read)"


def _run_header(title: str, run, summary: dict, slug: str, about: str = "") -> list[str]:
    """The top of a run's section: its name, folder and model, `about` (HTML, already escaped) when
    given, the fold scheme and the notes a reader should know."""
    parts = [f'<h2 id="{slug}">{title} {html.escape(run.name)}</h2>',
             f'<p class="muted">{html.escape(str(run.path))} — {html.escape(summary.get("model", ""))}</p>',
             *([about] if about else []),
             f"<p><b>Folds / groups:</b> {_scheme_html(run.scheme)}</p>"]
    if run.notes:
        parts.append('<div class="notes"><ul>' + "".join(f"<li>{html.escape(n)}</li>" for n in run.notes) + "</ul></div>")
    return parts


def _png_saver(out_dir: Path, prefix: str, written: list[Path]):
    """save(png, stem, alt) -> the <img> HTML, after writing out_dir/<prefix><stem>.png and listing it in `written`."""
    def save(png: bytes, stem: str, alt: str) -> str:
        path = out_dir / f"{prefix}{stem}.png"
        atomic_write_bytes(path, png)
        written.append(path)
        return _img(png, path.name, alt)

    return save
