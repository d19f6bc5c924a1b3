"""Detect, crop, classify -> one probability per class; and blend weights for several runs.

Pure functions of arrays. The detector says whether there is a fish (its best box's score,
calibrated on out-of-fold images into P(fish)); the crop classifier says which fish, given
that there is one. So for an empty class e (NCFM: NoF) and a fish class c:

    P(e) = 1 - P(fish)            P(c) = P(fish) * P_crop(c)

The calibration of P(fish) is a logistic regression on the logit of the best score, fitted on
the detector's out-of-fold images (fish images against empty ones): a score of 0.3 from a
detector trained with focal loss is not a 30% chance. `fit_weights` finds non-negative run
weights summing to 1 that minimise the out-of-fold log loss of the weighted average (a crop
run and a whole-image run, say).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-6


def _logit(score) -> np.ndarray:
    s = np.clip(np.nan_to_num(np.asarray(score, "float64"), nan=0.0), EPS, 1 - EPS)
    return np.log(s / (1 - s)).reshape(-1, 1)


def fit_fish_probability(scores, is_fish) -> dict:
    """A logistic regression of fish / no fish on the logit of the best score -> {"a", "b"}."""
    from sklearn.linear_model import LogisticRegression

    is_fish = np.asarray(is_fish, bool)
    if is_fish.all() or not is_fish.any():  # one kind only: the share is all one can say
        share = float(np.clip(is_fish.mean(), 0.01, 0.99))
        return {"a": 0.0, "b": float(np.log(share / (1 - share)))}
    model = LogisticRegression(C=10.0).fit(_logit(scores), is_fish)
    return {"a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}


def fish_probability(scores, fit: dict, clip: float = 0.0) -> np.ndarray:
    """P(fish) for best scores (NaN or 0 = nothing found), by a fit of fit_fish_probability."""
    z = fit["a"] * _logit(scores)[:, 0] + fit["b"]
    p = 1.0 / (1.0 + np.exp(-z))
    return np.clip(p, clip, 1 - clip) if clip else p


def combine(p_fish, crop_probs, classes, crop_classes, empty_classes) -> np.ndarray:
    """(N, len(classes)) probabilities: P(fish) spread over the fish classes by the crop
    classifier's (N, len(crop_classes)) probabilities, 1 - P(fish) over the empty class(es)."""
    p_fish = np.asarray(p_fish, "float64").reshape(-1, 1)
    crop = np.asarray(crop_probs, "float64")
    crop = crop / crop.sum(axis=1, keepdims=True)
    out = np.zeros((len(p_fish), len(classes)))
    for j, c in enumerate(crop_classes):
        out[:, list(classes).index(c)] = p_fish[:, 0] * crop[:, j]
    empty = [list(classes).index(c) for c in empty_classes]
    out[:, empty] = (1.0 - p_fish) / len(empty)
    return out


def fit_weights(run_probs: list[np.ndarray], y) -> np.ndarray:
    """Non-negative weights summing to 1 for runs' (N, C) probabilities, minimising the log loss
    of their weighted average on labels y (softmax-parametrised, so any optimiser keeps them valid)."""
    from scipy.optimize import minimize

    stack = np.stack([np.clip(np.asarray(p, "float64"), 1e-15, 1.0) for p in run_probs])
    y = np.asarray(y, int)
    if len(stack) == 1:
        return np.ones(1)
    picked = stack[:, np.arange(len(y)), y]  # (runs, N): each run's probability of the true class

    def loss(theta):
        w = np.exp(theta - theta.max())
        w /= w.sum()
        return -np.mean(np.log(np.clip(w @ picked, 1e-15, None)))

    best = min((minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-7})
                for start in [np.zeros(len(stack))] + list(np.eye(len(stack)) * 2.0)), key=lambda r: r.fun)
    w = np.exp(best.x - best.x.max())
    return w / w.sum()
