"""Kaggle's log-loss scorer and post-hoc calibration fitted on out-of-fold predictions.

Kaggle divides each row by its sum and clips to [1e-15, 1 - 1e-15] before scoring, so a
confident wrong answer costs up to 34.5. A temperature (softmax sharpening/flattening) and a
probability floor, both fitted on OOF predictions, are what the strong NCFM teams used.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from ncfm.competition import LOWER_IS_BETTER

KAGGLE_EPS = 1e-15


def kaggle_log_loss(labels, probs) -> float:
    """Multi-class log loss exactly as Kaggle scores it.

    labels: integer class indices, shape (N,). probs: shape (N, C), any positive scale.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs shape {probs.shape} does not match {labels.shape[0]} labels")
    probs = probs / probs.sum(axis=1, keepdims=True)
    probs = np.clip(probs, KAGGLE_EPS, 1 - KAGGLE_EPS)
    return float(-np.mean(np.log(probs[np.arange(len(labels)), labels])))


def per_sample_log_loss(labels, probs) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    probs = np.clip(probs / probs.sum(axis=1, keepdims=True), KAGGLE_EPS, 1 - KAGGLE_EPS)
    return -np.log(probs[np.arange(len(labels)), labels])


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """Rescale log-probabilities by 1/temperature and renormalise (T > 1 flattens)."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), KAGGLE_EPS, 1.0))
    z = logp / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(labels, probs, bounds=(0.05, 20.0)) -> float:
    """The temperature that minimises log loss of `probs` on `labels` (1-D search in log T)."""
    res = minimize_scalar(
        lambda log_t: kaggle_log_loss(labels, apply_temperature(probs, np.exp(log_t))),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
    )
    return float(np.exp(res.x))


def apply_floor(probs, floor: float) -> np.ndarray:
    """Raise every probability to at least `floor`, then renormalise rows."""
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must be in [0, 1), received floor={floor}")
    p = np.maximum(np.asarray(probs, dtype=np.float64), floor)
    return p / p.sum(axis=1, keepdims=True)


def fit_floor(labels, probs, bounds=(0.0, 0.1)) -> float:
    res = minimize_scalar(
        lambda f: kaggle_log_loss(labels, apply_floor(probs, f)), bounds=bounds, method="bounded"
    )
    return float(res.x)


def calibrate(probs, temperature: float = 1.0, floor: float = 0.0) -> np.ndarray:
    """Apply a fitted (temperature, floor) pair: the temperature first, then the floor."""
    out = apply_temperature(probs, temperature) if temperature != 1.0 else np.asarray(probs, float)
    out = out / out.sum(axis=1, keepdims=True)
    return apply_floor(out, floor) if floor > 0 else out


def _fit(labels, probs, method: str) -> tuple[float, float]:
    t = fit_temperature(labels, probs) if method in ("temperature", "both") else 1.0
    f = fit_floor(labels, calibrate(probs, t)) if method in ("floor", "both") else 0.0
    return t, f


def held_out_loss(labels, probs, groups, method: str) -> float:
    """Log loss of calibrations each fitted without one group and applied to that group.

    With folds as groups this asks what a calibration fitted on OOF predictions does to images of
    boats it was not fitted on, which is what stage 2's new boats are to the fitted one."""
    labels, probs, groups = np.asarray(labels), np.asarray(probs, dtype=np.float64), np.asarray(groups)
    out = np.empty_like(probs)
    for g in np.unique(groups):
        held = groups == g
        t, f = _fit(labels[~held], probs[~held], method)
        out[held] = calibrate(probs[held], t, f)
    return kaggle_log_loss(labels, out)


def fit_calibration(labels, probs, method: str = "temperature", groups=None) -> dict:
    """Fit `method` in {"temperature", "floor", "both"} on OOF predictions.

    Returns {"temperature": T, "floor": f, "before": loss, "after": loss}. With `groups` (the
    fold of each row) the fit is also checked out of sample: each group calibrated by a fit on
    the others. If that held-out loss is no better than `before`, the calibration fits noise of
    these rows (a small or weak OOF set can pull T to an extreme) and is not applied: T = 1,
    floor 0, and "rejected" keeps what was fitted. "held_out" holds that loss, "applied" whether
    it passed, "held_out_by" "folds" or, with one group only, "random halves" of the rows.
    """
    if method not in ("temperature", "floor", "both"):
        raise ValueError(f"method must be temperature, floor or both; received {method!r}")
    t, f = _fit(labels, probs, method)
    before = kaggle_log_loss(labels, probs)
    out = {"temperature": t, "floor": f, "before": before, "after": kaggle_log_loss(labels, calibrate(probs, t, f))}
    if groups is not None:
        groups = np.asarray(groups)
        out["held_out_by"] = "folds"
        if len(np.unique(groups)) < 2:
            out["held_out_by"], groups = "random halves", np.random.default_rng(0).permutation(len(groups)) % 2
        out["held_out"] = held_out_loss(labels, probs, groups, method)
        out["applied"] = bool(out["held_out"] < before)
        if not out["applied"]:
            out["rejected"] = {k: out[k] for k in ("temperature", "floor", "after")}
            out.update(temperature=1.0, floor=0.0, after=before)
    return out


# ----------------------------------------------------------------------------- the competition's metric
def accuracy(labels, probs) -> float:
    """Share of rows whose most probable class is the label (= micro-averaged F1 for one label each)."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    return float(np.mean(np.argmax(probs, axis=1) == labels)) if len(labels) else float("nan")


def roc_auc(labels, probs, positive: int = 1) -> float:
    """ROC AUC of P(positive class); NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels) == positive
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(probs, dtype=np.float64)[:, positive]))


def score(metric: str, labels, probs, positive: int = 1) -> float:
    """The competition's metric: log_loss (lower is better), accuracy or roc_auc (higher is better)."""
    if metric == "log_loss":
        return kaggle_log_loss(labels, probs)
    if metric == "accuracy":
        return accuracy(labels, probs)
    if metric == "roc_auc":
        return roc_auc(labels, probs, positive)
    raise ValueError(f"metric must be log_loss, accuracy or roc_auc; received {metric!r}")


# ----------------------------------------------------------------------------- against the class priors
def class_shares(labels, n_classes: int) -> np.ndarray:
    """Each class's share of `labels` (integer class indices), counting one more image of every
    class: a class absent from them gets a small share, never 0 (which would cost 34.5 per image)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes) + 1.0
    return counts / counts.sum()


def prior_score(metric: str, labels, shares, positive: int = 1) -> float:
    """The metric of a model that learned nothing but the class shares `shares`, predicting them for
    every row of `labels`: the log loss of those shares, the accuracy of always naming the largest
    class, a ROC AUC of 0.5 (one score for every row ranks nothing)."""
    return score(metric, labels, np.tile(np.asarray(shares, dtype=np.float64), (len(labels), 1)), positive)


def per_row(metric: str, labels, probs) -> np.ndarray | None:
    """Each row's term of a metric that is a mean over rows: its log loss, or 1 where the top class
    is the true one (accuracy); None for ROC AUC, which is not such a mean."""
    if metric == "log_loss":
        return per_sample_log_loss(labels, probs)
    if metric == "accuracy":
        return (np.argmax(np.asarray(probs), axis=1) == np.asarray(labels)).astype(np.float64)
    return None


def prior_margin(metric: str, labels, probs, shares) -> float:
    """Twice the standard error of the mean per-row difference between a model's `probs` and the
    class priors `shares` on the same rows: what a model must beat the priors by to count as having
    learned something. Level with them by chance on a few hundred images, a fold is judged with
    the rest of its run instead of being the one kept. 0 for ROC AUC and for fewer than 2 rows."""
    mine = per_row(metric, labels, probs)
    if mine is None or len(mine) < 2:
        return 0.0
    priors = per_row(metric, labels, np.tile(np.asarray(shares, dtype=np.float64), (len(mine), 1)))
    return float(2 * np.std(mine - priors, ddof=1) / np.sqrt(len(mine)))


def shrink(probs, shares, weight: float) -> np.ndarray:
    """weight * probs + (1 - weight) * the class shares: a model pulled towards the priors."""
    return weight * np.asarray(probs, dtype=np.float64) + (1.0 - weight) * np.asarray(shares, dtype=np.float64)


def fit_shrinkage(labels, probs, shares) -> float:
    """The weight in [0, 1] of `probs` against the class priors `shares` that minimises the log loss of
    shrink(probs, shares, weight) on `labels`: 1 for a model that beats the priors everywhere, near 0
    for one that learned nothing. The loss is convex in the weight, so a bounded search finds it."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0
    res = minimize_scalar(lambda w: kaggle_log_loss(labels, shrink(probs, shares, w)), bounds=(0.0, 1.0),
                          method="bounded", options={"xatol": 1e-4})
    return float(res.x)


def no_better(metric: str, value: float, baseline: float, margin: float = 0.0) -> bool:
    """Whether `value` of `metric` is no better than `baseline`, or better by no more than `margin`
    (prior_margin): a log loss not lower by more, an accuracy or ROC AUC not higher by more. False
    when either is NaN (nothing to judge: e.g. ROC AUC on one class). RMSE, as log loss, is lower when better."""
    if metric in LOWER_IS_BETTER:
        return bool(value >= baseline - margin)
    return bool(value <= baseline + margin)


# ----------------------------------------------------------------------------- other kinds of answer
# Several labels per image (0/1 matrices of images x labels), a number, an ordered grade: the scorers
# of those competitions and the post-processing fitted on out-of-fold predictions that each rewards.
# Each agrees with scikit-learn's (fbeta_score, f1_score, mean_squared_error, cohen_kappa_score with
# quadratic weights; tests/test_calibrate.py) and is written out in NumPy because the threshold
# searches below call it thousands of times.
def f_beta(truth, predicted, beta: float = 2.0, average: str = "samples") -> float:
    """F-beta of 0/1 label matrices (images x labels). average: "samples" = per image, then the mean
    (Planet's F2); "micro" = over every (image, label) pair at once (iMet); "macro" = per label, then
    the mean. A row or label with no true and no predicted label scores 0, as scikit-learn's does."""
    truth, predicted = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    if truth.shape != predicted.shape or truth.ndim != 2:
        raise ValueError(f"truth {truth.shape} and predicted {predicted.shape} must be the same (images, labels)")
    axis = {"samples": 1, "macro": 0, "micro": None}.get(average)
    if average not in ("samples", "macro", "micro"):
        raise ValueError(f"average must be samples, micro or macro; received {average!r}")
    tp = (truth & predicted).sum(axis=axis)
    fp = (~truth & predicted).sum(axis=axis)
    fn = (truth & ~predicted).sum(axis=axis)
    b2 = beta * beta
    denominator = (1 + b2) * tp + b2 * fn + fp
    scores = np.divide((1 + b2) * tp, denominator, out=np.zeros(np.shape(tp), dtype=np.float64),
                       where=denominator > 0)
    return float(np.mean(scores))


def rmse(truth, predicted) -> float:
    truth, predicted = np.asarray(truth, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    return float(np.sqrt(np.mean((truth - predicted) ** 2)))


def quadratic_kappa(truth, predicted) -> float:
    """Cohen's kappa with quadratic weights of two integer gradings (APTOS, Diabetic Retinopathy), as
    scikit-learn computes it: the grades are those present in either, in order, one step apart."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    grades, both = np.unique(np.concatenate([truth, predicted]), return_inverse=True)
    k, n = len(grades), len(truth)
    if k < 2:
        return float("nan")
    a, b = both[:n], both[n:]
    observed = np.zeros((k, k))
    np.add.at(observed, (a, b), 1.0)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / n
    weights = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2.0
    return float(1.0 - (weights * observed).sum() / (weights * expected).sum())


THRESHOLD_GRID = np.round(np.arange(0.02, 0.99, 0.02), 2)


def fit_label_thresholds(truth, probs, beta: float = 2.0, average: str = "samples", passes: int = 2) -> dict:
    """Thresholds on each label's probability that maximise f_beta on OOF rows: first one for all
    labels (grid THRESHOLD_GRID), then each label's own in turn, the others held (`passes` rounds).
    -> {"global": t, "per_label": [t, ...], "at_0.5", "at_global", "at_per_label": their F scores}."""
    truth, probs = np.asarray(truth, dtype=bool), np.asarray(probs, dtype=np.float64)

    def score_at(thresholds) -> float:
        return f_beta(truth, probs >= thresholds, beta, average)

    best_global = max(THRESHOLD_GRID, key=lambda t: (score_at(t), -abs(t - 0.5)))
    per_label = np.full(probs.shape[1], best_global)
    current = score_at(per_label)
    for _ in range(passes):
        for j in range(probs.shape[1]):
            for t in THRESHOLD_GRID:
                trial = per_label.copy()
                trial[j] = t
                if (s := score_at(trial)) > current + 1e-12:
                    per_label, current = trial, s
    return {"global": float(best_global), "per_label": per_label.tolist(), "at_0.5": score_at(0.5),
            "at_global": score_at(best_global), "at_per_label": current}


def grades_of(values, cuts) -> np.ndarray:
    """Grade of each value: the number of cut points at or below it (cuts ascending)."""
    return np.searchsorted(np.asarray(cuts, dtype=np.float64), np.asarray(values, dtype=np.float64), side="right")


def fit_grade_thresholds(truth, values, n_grades: int, passes: int = 3, steps: int = 40) -> dict:
    """Cut points between grades 0..n_grades-1 on a regressed value that maximise quadratic_kappa on
    OOF rows, as APTOS' winners fitted them: from the plain rounding cuts (0.5, 1.5, ...), each cut
    in turn searched between its neighbours, the others held. -> {"cuts", "rounded", "fitted"}."""
    truth, values = np.asarray(truth), np.asarray(values, dtype=np.float64)
    cuts = np.arange(n_grades - 1) + 0.5
    rounded = current = quadratic_kappa(truth, grades_of(values, cuts))
    for _ in range(passes):
        for j in range(len(cuts)):
            low = cuts[j - 1] if j else min(values.min(), cuts[0]) - 0.5
            high = cuts[j + 1] if j + 1 < len(cuts) else max(values.max(), cuts[-1]) + 0.5
            for c in np.linspace(low, high, steps + 2)[1:-1]:
                trial = cuts.copy()
                trial[j] = c
                if (s := quadratic_kappa(truth, grades_of(values, trial))) > current + 1e-12:
                    cuts, current = trial, s
    return {"cuts": cuts.tolist(), "rounded": rounded, "fitted": current}
