"""The report section of a run whose answer is not one class per image (ncfm.task: several labels,
a number, a grade): per fold, the competition's metric on its held-out images under the fixed rule
(thresholds 0.5, plain rounding, clipping) against an answer that ignores the image (train's
figures, state.json); the pooled OOF; the answer rule predict fitted and chose, with each
candidate's score on OOF and on held-out folds (calibration.json); loss curves.

Like ncfm.report_detect it builds on ncfm.report_page and never imports ncfm.report.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ncfm import NcfmError, competition, runs, task
from ncfm.competition import Competition
from ncfm.report_page import (FoldRun, _figure, _fmt, _history, _n_folds, _or_note, _png, _png_saver, _run_header,
                              _td, read_fold_scheme)


@dataclass
class TaskRun:
    path: Path
    folds: list[FoldRun]
    comp: Competition
    calibration: dict | None = None
    scheme: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.resolve().name


def task_competition(run_dir: Path) -> Competition | None:
    """The competition of a classifier run when its answer is not one class per image: competition.json
    beside the manifest its folds were trained on; None for one class per image or when unknown."""
    for fold in runs.all_folds(run_dir):
        try:
            config = runs.read_config(fold) or {}
        except NcfmError:
            continue
        path = competition.path_beside(config.get("folds_csv") or "folds.csv")
        if config.get("folds_csv") and path.is_file():
            try:
                comp = competition.load(path)
            except NcfmError:
                return None
            return comp if comp.task != "single" else None
    return None


def load_task_run(run_dir: Path, comp: Competition, calibration_dir: Path | None = None) -> TaskRun:
    notes: list[str] = []
    folds = []
    for fold in runs.all_folds(run_dir):
        config = _or_note(runs.read_config, fold, notes, "its settings are not shown") or {}
        state = _or_note(runs.read_state, fold, notes, "its progress is not shown") or {}
        fr = FoldRun(fold.index, fold.dir, config, state, _history(fold, notes), classes=tuple(comp.classes))
        if fold.oof.is_file():
            fr.oof = runs.read_oof(fold.oof, comp.classes, f"retrain that fold ({fold.retrain_hint()})",
                                   one_class=False)
        else:
            notes.append(f"{fold.name}: no {fold.oof.name} yet; left out of the OOF numbers")
        folds.append(fr)
    config = next((f.config for f in folds if f.config), {})
    calibration = _or_note(runs.read_calibration, calibration_dir or run_dir, notes, "predict's rule not shown")
    return TaskRun(Path(run_dir), folds, comp, calibration, read_fold_scheme(Path(run_dir), config), notes)


def summarize_task_run(run: TaskRun) -> dict:
    comp, metric = run.comp, run.comp.metric
    summary = {"run": str(run.path), "name": run.name, "task": comp.kind, "metric": metric,
               "metric_name": comp.metric_name, "n_folds": _n_folds(run.folds), "folds": [], "oof": None,
               "answer": (run.calibration or {}).get("answer"), "notes": run.notes, "scheme": run.scheme}
    pooled = [f.oof for f in run.folds if f.oof is not None]
    for f in run.folds:
        status = f.status.replace("the class priors", "its baseline")  # the baseline of its task, not class shares
        row = {"fold": f.fold, "status": status, "images": None, "score": None,
               "baseline": f.state.get(f"prior_{metric}"), "best_epoch": f.state.get("best_epoch")}
        if f.oof is not None:
            row.update(images=len(f.oof), score=task.score(comp, f.oof.label, f.oof[list(comp.classes)]))
        summary["folds"].append(row)
    if pooled:
        oof = pd.concat(pooled, ignore_index=True)
        summary["oof"] = {"images": len(oof), "score": task.score(comp, oof.label, oof[list(comp.classes)])}
    return summary


def format_task(s: dict) -> list[str]:
    lines = [f"{s['run']}  {s.get('model', '')}",
             f"  {'fold':<22}{'images':>7}{s['metric']:>12}{'baseline':>10}{'best epoch':>12}  status"]
    for r in s["folds"]:
        lines.append(f"  {'fold' + str(r['fold']):<22}{r['images'] if r['images'] is not None else '-':>7}"
                     f"{_fmt(r['score'], 4):>12}{_fmt(r['baseline'], 4):>10}"
                     f"{r['best_epoch'] if r['best_epoch'] is not None else '-':>12}  {r['status']}")
    if s["oof"]:
        lines.append(f"  {'all OOF (fixed rule)':<22}{s['oof']['images']:>7}{_fmt(s['oof']['score'], 4):>12}")
    answer = s["answer"]
    if answer and answer.get("scores"):
        chosen = answer["chosen"]
        lines.append(f"  predict's rule: {chosen} ({s['metric_name']} on held-out folds "
                     f"{_fmt(answer['scores'][chosen]['held_out'], 4)}; " + ", ".join(
                         f"{k} {_fmt(v['held_out'], 4)}" for k, v in answer["scores"].items()) + ")")
    else:
        lines.append("  no answer rule fitted yet (run ncfm predict)")
    lines += [f"  note: {note}" for note in s["notes"]]
    return lines


def plot_losses(fold: FoldRun) -> bytes | None:
    h = fold.history
    if h is None or h.empty or "loss" not in h.columns:
        return None
    fig = _figure(6, 3.4)
    ax = fig.subplots()
    ax.plot(h["epoch"], h["loss"], "o-", ms=3, label="train loss")
    if "val_loss" in h.columns:
        ax.plot(h["epoch"], h["val_loss"], "o-", ms=3, label="validation loss")
    if fold.state.get("best_epoch"):
        ax.axvline(fold.state["best_epoch"], color="tab:red", ls=":", label=f"best epoch ({fold.state['best_epoch']})")
    ax.set_title(f"Binary cross-entropy — fold {fold.fold}")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def task_section(run: TaskRun, s: dict, slug: str, prefix: str, out_dir: Path, written: list[Path]) -> str:
    comp = run.comp
    if comp.kind == "multilabel":
        outputs = f"{comp.num_classes} labels: {', '.join(comp.classes[:20])}"
    elif comp.kind == "regression":
        outputs = f"{comp.classes[0]}, {comp.value_range[0]:g} to {comp.value_range[1]:g}"
    else:
        outputs = f"{comp.classes[0]}, grades {', '.join(map(str, comp.grades))}"
    save = _png_saver(out_dir, prefix, written)
    parts = _run_header("Run", run, s, slug, f"<p><b>Task</b> {comp.kind} ({html.escape(outputs)}); scored by "
                                             f"{html.escape(comp.metric_name)}</p>")
    rows = "".join("<tr>" + _td(f"fold{r['fold']}", numeric=False) + _td(r["images"] if r["images"] is not None else "—")
                   + _td(_fmt(r["score"], 4)) + _td(_fmt(r["baseline"], 4))
                   + _td(r["best_epoch"] if r["best_epoch"] is not None else "—") + _td(r["status"], numeric=False)
                   + "</tr>" for r in s["folds"])
    if s["oof"]:
        rows += ("<tr><td><b>all OOF</b></td>" + _td(s["oof"]["images"]) + _td(_fmt(s["oof"]["score"], 4))
                 + "<td></td><td></td><td></td></tr>")
    parts += ["<h3>Cross-validation summary</h3>",
              f"<table><tr><th>fold</th><th>images</th><th>{html.escape(comp.metric_name)} "
              f"({html.escape(task.FIXED_RULE[comp.kind])})</th><th>baseline: {html.escape(task.BASELINE[comp.kind])}"
              f"</th><th>best epoch</th><th>status</th></tr>{rows}</table>"]
    answer = s["answer"]
    if answer and answer.get("scores"):
        body = "".join("<tr>" + _td(name + (" (chosen)" if name == answer["chosen"] else ""), numeric=False)
                       + _td(_fmt(v["on_oof"], 4)) + _td(_fmt(v["held_out"], 4)) + "</tr>"
                       for name, v in answer["scores"].items())
        parts += ["<h3>Predict's answer rule</h3>",
                  "<table><tr><th>rule</th><th>fitted and scored on all OOF</th><th>scored on held-out folds"
                  f"</th></tr>{body}</table>",
                  f"<p class=\"muted\">Rule used: {html.escape(str(answer['rule']))}</p>"]
    else:
        parts.append("<p>No answer rule yet: run <code>ncfm predict</code>.</p>")
    parts.append("<h3>Loss curves</h3>")
    for f in run.folds:
        png = plot_losses(f)
        if png is None:
            parts.append(f"<p>fold{f.fold}: no training history yet.</p>")
            continue
        parts.append(save(png, f"curves_fold{f.fold}", f"loss curves, fold {f.fold}"))
    return "\n".join(parts)

