"""Detect, crop, classify -> one probability per class; and blend weights for several runs.

Pure functions of arrays. The detector says whether there is a fish (its best box's score,
calibrated on out-of-fold images into P(fish)); the crop classifier says which fish, given
that there is one. So for an empty class e (NCFM: NoF) and a fish class c:

    P(e) = 1 - P(fish)            P(c) = P(fish) * P_crop(c)

The calibration of P(fish) is a logistic regression on the logit of the best score, fitted on
the detector's out-of-fold images (fish images against empty ones): a score of 0.3 from a
detector trained with focal loss is not a 30% chance. (Run weights fitted on out-of-fold
predictions are ncfm.ensemble.fit_weights.)

Several boxes per image (combine_boxes): each crop's class probabilities weighted by its box's
score. A confidence blend of a crop run with a whole-image run (fit_confidence_blend): per image,
w * crop + (1 - w) * whole with w = logistic(a * logit(best box score) + b), fitted on OOF, so
where the detector found nothing it trusts (decks of decoys, night frames) the whole image speaks.
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


def _logistic_of_score(scores, fit: dict) -> np.ndarray:
    """logistic(a * logit(score) + b) for the {"a", "b"} of a fit, without overflow for large |z|."""
    from scipy.special import expit

    return expit(fit["a"] * _logit(scores)[:, 0] + fit["b"])


def fish_probability(scores, fit: dict, clip: float = 0.0) -> np.ndarray:
    """P(fish) for best scores (NaN or 0 = nothing found), by a fit of fit_fish_probability."""
    p = _logistic_of_score(scores, fit)
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


def combine_boxes(crop_probs, image_of, scores, n_images: int) -> np.ndarray:
    """(n_images, C) probabilities from the crops of several boxes per image: each image's crops'
    (N, C) probabilities averaged with their boxes' scores as weights (equal weights where every box of
    the image scored 0, as a no-detection whole-image crop does). image_of: each crop's image,
    0..n_images-1; every image needs at least one crop. Rows sum to one."""
    crop = np.asarray(crop_probs, "float64")
    crop = crop / crop.sum(axis=1, keepdims=True)
    image_of = np.asarray(image_of, np.int64)
    w = np.clip(np.nan_to_num(np.asarray(scores, "float64"), nan=0.0), 0.0, None)
    total = np.bincount(image_of, weights=w, minlength=n_images)
    w = np.where(total[image_of] > 0, w, 1.0)  # nothing scored: the crops count alike
    if (np.bincount(image_of, minlength=n_images) == 0).any():
        raise ValueError("combine_boxes: an image has no crop")
    out = np.zeros((n_images, crop.shape[1]))
    np.add.at(out, image_of, crop * w[:, None])
    return out / out.sum(axis=1, keepdims=True)


def box_weight(scores, fit: dict) -> np.ndarray:
    """The crop path's weight per image in a confidence blend: logistic(a * logit(best score) + b)."""
    return _logistic_of_score(scores, fit)


def fit_confidence_blend(crop_probs, whole_probs, scores, y) -> dict:
    """{"a", "b"} of box_weight minimising the log loss of w * crop + (1 - w) * whole on labels y:
    the crop path counts for more where the detector is sure of its box, the whole image where it is
    not. With a = 0 this is one weight for every image, so it never fits worse than that."""
    from scipy.optimize import minimize
    from scipy.special import expit

    crop = np.asarray(crop_probs, "float64")
    whole = np.asarray(whole_probs, "float64")
    y = np.asarray(y, int)
    rows = np.arange(len(y))
    pc, pw, z = crop[rows, y], whole[rows, y], _logit(scores)[:, 0]

    def loss(theta):
        w = expit(theta[0] * z + theta[1])
        return -np.mean(np.log(np.clip(w * pc + (1 - w) * pw, 1e-15, None)))

    best = min((minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-8})
                for start in ([0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, -2.0])), key=lambda r: r.fun)
    return {"a": float(best.x[0]), "b": float(best.x[1]), "oof_log_loss": float(best.fun)}
