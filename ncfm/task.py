"""The answers that are not one class per image: from training labels to the model's targets, and
from its outputs to the submission's values.

    task        targets (the model's outputs, each in [0, 1])          answer
    multilabel  1 per label the image has, else 0; a sigmoid each       the labels whose probability reaches
                                                                        its threshold (at least one)
    regression  the value scaled over the training range; one sigmoid  the value, clipped to the range
    ordinal     the grade scaled over the grades; one sigmoid           the grade between two cut points

Every output is trained with binary cross-entropy: per label for several labels, and on the scaled
value for a number or a grade (a bounded target, as Pawpularity's winners trained; an ordered
grade regressed rather than classified, as APTOS' did). Folds, views and runs are averaged as they
are for classes (the mean of scaled values is the scaled mean).

The post-processing is fitted on out-of-fold predictions (fit_answer) and recorded by predict in
calibration.json: thresholds per label (one global threshold the fallback), cut points between
grades (plain rounding the fallback), the clipping range. Each fallback is kept unless the fitted
rule scores better on folds it was not fitted on (cross-fitted over the OOF folds).

The single-label kinds keep their own path (train: softmax and categorical cross-entropy; predict:
calibration and the weak-fold rule); `targets` serves them too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ncfm import calibrate
from ncfm.batches import one_hot
from ncfm.competition import Competition


def targets(comp: Competition, labels) -> np.ndarray:
    """(N, outputs) float32 training targets of folds.csv labels (strings), each in [0, 1]."""
    labels = [str(label) for label in labels]
    if comp.task == "single":
        return one_hot(labels, comp.classes)
    if comp.kind == "multilabel":
        return label_matrix(comp, labels).astype("float32")
    return scaled(comp, np.asarray(labels, dtype=np.float64))[:, None].astype("float32")


def label_matrix(comp: Competition, labels) -> np.ndarray:
    """multilabel: (N, labels) bool, True where an image has the label."""
    index = {c: i for i, c in enumerate(comp.classes)}
    out = np.zeros((len(labels), comp.num_classes), dtype=bool)
    for row, label in enumerate(labels):
        out[row, [index[t] for t in str(label).split()]] = True
    return out


def _span(comp: Competition) -> tuple[float, float]:
    if comp.kind == "regression":
        return float(comp.value_range[0]), float(comp.value_range[1])
    return float(comp.grades[0]), float(comp.grades[-1])


def scaled(comp: Competition, values) -> np.ndarray:
    """A number or a grade on the model's [0, 1] scale."""
    low, high = _span(comp)
    return np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


def unscaled(comp: Competition, outputs) -> np.ndarray:
    """The model's (N, 1) or (N,) outputs back on the value's or the grade's scale."""
    low, high = _span(comp)
    return low + np.asarray(outputs, dtype=np.float64).reshape(-1) * (high - low)


def truth(comp: Competition, labels) -> np.ndarray:
    """What the metric compares answers to: a bool label matrix, the numbers, or the grades."""
    if comp.kind == "multilabel":
        return label_matrix(comp, labels)
    values = np.asarray([float(x) for x in labels], dtype=np.float64)
    return values.astype(np.int64) if comp.kind == "ordinal" else values


# ----------------------------------------------------------------------------- answers and scores
def _f_settings(metric: str) -> tuple[float, str]:
    """(beta, average) of an F-score metric name such as f2_samples."""
    head, average = metric.split("_")
    return float(head[1:]), average


FIXED_RULE = {"multilabel": "thresholds at 0.5", "ordinal": "plain rounding", "regression": "clipped to the range"}
BASELINE = {"multilabel": "every label at its training frequency", "ordinal": "the most common training grade",
            "regression": "the mean training value"}


def default_rule(comp: Competition) -> dict:
    """The post-processing before any fitting: threshold 0.5, plain rounding, clipping to the range."""
    if comp.kind == "multilabel":
        return {"thresholds": [0.5] * comp.num_classes}
    if comp.kind == "ordinal":
        return {"cuts": (np.asarray(comp.grades[:-1], dtype=np.float64) + 0.5).tolist()}
    return {"clip": list(comp.value_range)}


def decide(comp: Competition, outputs, rule: dict | None = None) -> np.ndarray:
    """The answers of (N, outputs) model outputs under `rule` (default_rule when None): a bool label
    matrix with at least one label per row (the most probable when none reaches its threshold),
    numbers clipped to the range, or grades."""
    rule = rule or default_rule(comp)
    outputs = np.asarray(outputs, dtype=np.float64)
    if comp.kind == "multilabel":
        chosen = outputs >= np.asarray(rule["thresholds"], dtype=np.float64)
        empty = ~chosen.any(axis=1)
        chosen[np.flatnonzero(empty), outputs[empty].argmax(axis=1)] = True
        return chosen
    values = unscaled(comp, outputs)
    if comp.kind == "ordinal":
        return comp.grades[0] + calibrate.grades_of(values, rule["cuts"])
    low, high = rule.get("clip", comp.value_range)
    return np.clip(values, low, high)


def score_answers(comp: Competition, true, answers) -> float:
    """The competition's metric of decided answers against `truth`."""
    if comp.kind == "multilabel":
        beta, average = _f_settings(comp.metric)
        return calibrate.f_beta(true, answers, beta, average)
    if comp.kind == "ordinal":
        return calibrate.quadratic_kappa(true, answers)
    return calibrate.rmse(true, answers)


def score(comp: Competition, labels, outputs, rule: dict | None = None) -> float:
    """The competition's metric of model outputs on folds.csv labels, under `rule` (default_rule)."""
    return score_answers(comp, truth(comp, labels), decide(comp, outputs, rule))


def _ignoring_the_image(comp: Competition, train_labels, n: int) -> np.ndarray:
    """(n, outputs) that ignore the image, learned from `train_labels` (see baseline)."""
    true = truth(comp, train_labels)
    if comp.kind == "multilabel":
        return np.tile(true.mean(axis=0), (n, 1))
    if comp.kind == "ordinal":
        grades, counts = np.unique(true, return_counts=True)
        return np.full((n, 1), scaled(comp, grades[counts.argmax()]))
    return np.full((n, 1), scaled(comp, true.mean()))


def baseline(comp: Competition, train_labels, labels) -> float:
    """The metric of an answer that ignores the image, learned from `train_labels` and scored on
    `labels`: every label at its training frequency (thresholded as a model's would be, at 0.5; at
    least the most common label), the mean training value, the most common training grade."""
    return score(comp, labels, _ignoring_the_image(comp, train_labels, len(labels)))


def blind_scores(comp: Competition, labels, folds, test_labels=None) -> dict:
    """The image-blind answer (see baseline) judged as predict judges a model: its OOF outputs (each
    fold's from the other folds' labels), its answer rule fitted and chosen by fit_answer, so a
    fitted threshold helps it as it helps the model (F2 rewards naming every common label). ->
    {"fixed": its OOF score under the fixed rule, "held_out": under the chosen rule on held-out
    folds, "chosen", and with `test_labels` "test": the rule on outputs learned from every label}."""
    labels, folds = pd.Series([str(x) for x in labels]), np.asarray(folds)
    outputs = np.zeros((len(labels), comp.num_classes))
    for k in np.unique(folds):
        held = folds == k
        outputs[held] = _ignoring_the_image(comp, labels[~held], int(held.sum()))
    fitted = fit_answer(comp, labels, outputs, folds)
    out = {"fixed": fitted["scores"]["fixed"]["on_oof"], "held_out": fitted["scores"][fitted["chosen"]]["held_out"],
           "chosen": fitted["chosen"]}
    if test_labels is not None:
        out["test"] = score(comp, test_labels, _ignoring_the_image(comp, labels, len(test_labels)), fitted["rule"])
    return out


def better(comp: Competition, a: float, b: float) -> bool:
    """Whether score a beats score b in the competition's metric (RMSE: lower)."""
    return a < b if comp.lower_is_better else a > b


def values_for_csv(comp: Competition, answers) -> list:
    """The submission column's cells: space-separated labels in the vocabulary's order, numbers, or
    integer grades."""
    if comp.kind == "multilabel":
        names = np.asarray(comp.classes, dtype=object)
        return [comp.separator.join(names[row]) for row in np.asarray(answers, dtype=bool)]
    if comp.kind == "ordinal":
        return [int(g) for g in answers]
    return [float(v) for v in answers]


# ----------------------------------------------------------------------------- fitting on OOF
def _fit_rule(comp: Competition, true, outputs, which: str) -> dict:
    """One candidate rule fitted on (true, outputs): multilabel "global" or "per_label"; ordinal "cuts"."""
    if comp.kind == "multilabel":
        beta, average = _f_settings(comp.metric)
        fitted = calibrate.fit_label_thresholds(true, outputs, beta, average, passes=1 if which == "per_label" else 0)
        if which == "global":
            return {"thresholds": [fitted["global"]] * comp.num_classes}
        return {"thresholds": fitted["per_label"]}
    fitted = calibrate.fit_grade_thresholds(true - comp.grades[0], unscaled(comp, outputs) - comp.grades[0],
                                            len(comp.grades))
    return {"cuts": (np.asarray(fitted["cuts"]) + comp.grades[0]).tolist()}


CANDIDATES = {"multilabel": ("fixed", "global", "per_label"), "ordinal": ("fixed", "cuts"), "regression": ("fixed",)}
FALLBACK = {"multilabel": "global", "ordinal": "fixed", "regression": "fixed"}


def fit_answer(comp: Competition, labels, outputs, folds) -> dict:
    """The post-processing fitted on pooled OOF rows (labels, outputs, the fold of each row).

    Each candidate (CANDIDATES: the fixed rule, one global threshold, a threshold per label, cut
    points between grades) is fitted on all rows ("on_oof": its score there, flattering) and,
    cross-fitted, on every fold but one and scored on that one ("held_out": the score of the
    pooled held-out answers). The richer rule is chosen only if it beats the fallback (FALLBACK)
    held out (with the OOF of one fold only, nothing is held out and the fallback is kept); every
    candidate's rule is the one fitted on all rows.
    -> {"rule", "chosen", "scores": {candidate: {"rule", "on_oof", "held_out"}}}."""
    true, outputs, folds = truth(comp, labels), np.asarray(outputs, dtype=np.float64), np.asarray(folds)
    names = CANDIDATES[comp.kind]

    def fit(which, rows):
        return default_rule(comp) if which == "fixed" else _fit_rule(comp, true[rows], outputs[rows], which)

    everything = np.ones(len(true), dtype=bool)
    scores = {}
    for which in names:
        rule = fit(which, everything)
        held = np.zeros_like(decide(comp, outputs))
        for k in np.unique(folds):
            inside = folds != k
            held[~inside] = decide(comp, outputs[~inside], fit(which, inside) if inside.any() else rule)
        scores[which] = {"rule": rule, "on_oof": score_answers(comp, true, decide(comp, outputs, rule)),
                         "held_out": score_answers(comp, true, held)}
    chosen = FALLBACK[comp.kind]
    for which in names if len(np.unique(folds)) > 1 else ():  # one fold: nothing is held out, keep the fallback
        if better(comp, scores[which]["held_out"], scores[chosen]["held_out"]):
            chosen = which
    return {"rule": scores[chosen]["rule"], "chosen": chosen, "scores": scores}
