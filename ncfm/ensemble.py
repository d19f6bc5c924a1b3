"""Averaging predictions: test-time views, folds and runs; the pooled out-of-fold set of runs.

Pure functions of arrays and DataFrames, shared by predict (which ensembles and calibrates)
and report (which shows what predict did): one averaging, one OOF ensemble.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ncfm import NcfmError


def average(probs: list[np.ndarray], mean: str = "arithmetic") -> np.ndarray:
    """Average probability arrays of the same shape; geometric = normalised exp-mean-log."""
    stack = np.stack([np.asarray(p, dtype="float64") for p in probs])
    if mean == "geometric":
        out = np.exp(np.mean(np.log(np.clip(stack, 1e-15, 1.0)), axis=0))
    elif mean == "arithmetic":
        out = stack.mean(axis=0)
    else:
        raise ValueError(f"mean must be arithmetic or geometric; received {mean!r}")
    return out / out.sum(axis=-1, keepdims=True)


def pool_folds(frames: dict, classes) -> pd.DataFrame | None:
    """One run's OOF: {fold name: OOF frame (image, label, y, one column per class)} stacked,
    with a `fold` column and rows renormalised; None when no fold has OOF predictions."""
    if not frames:
        return None
    pooled = pd.concat([df.assign(fold=name) for name, df in frames.items()], ignore_index=True)
    probs = pooled[list(classes)].to_numpy("float64")
    pooled[list(classes)] = probs / probs.sum(axis=1, keepdims=True)
    return pooled


class PooledOOF(NamedTuple):
    """The OOF rows every run predicted, runs averaged: label index, probabilities, fold."""

    images: np.ndarray
    y: np.ndarray
    probs: np.ndarray
    fold: np.ndarray
    run_probs: list  # each run's own probabilities on the same rows


def ensemble_oof(pooled: list[pd.DataFrame], classes, mean: str = "arithmetic",
                 names: list[str] | None = None) -> PooledOOF | None:
    """Average runs' pooled OOF (see pool_folds) over the images all of them predicted, which
    must carry the same labels in each. None when a run has no OOF or no image is shared."""
    if not pooled or any(df is None for df in pooled):
        return None
    aligned = [df.drop_duplicates("image").set_index("image").sort_index() for df in pooled]
    common = aligned[0].index
    for df in aligned[1:]:
        common = common.intersection(df.index)
    if len(common) == 0:
        return None
    aligned = [df.loc[common] for df in aligned]
    y = aligned[0]["y"].to_numpy(dtype=np.int64)
    names = names or [f"run {i}" for i in range(len(aligned))]
    for name, df in zip(names[1:], aligned[1:]):
        differs = df["y"].to_numpy() != y
        if differs.any():
            raise NcfmError(f"{name}: the label of {df.index[differs][0]} differs from {names[0]}'s; "
                            f"the runs were trained on different manifests")
    run_probs = [df[list(classes)].to_numpy("float64") for df in aligned]
    return PooledOOF(np.asarray(common), y, average(run_probs, mean), aligned[0]["fold"].to_numpy(), run_probs)


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


def fold_priors(oofs: dict, name: str, n_classes: int) -> np.ndarray:
    """The class shares fold `name` of a run is pulled towards (--weak-folds shrink): those of the
    labels of the run's other folds' OOF rows, i.e. of its own training images (calibrate.class_shares).
    oofs: {fold name: OOF frame with a `y` column}."""
    from ncfm.calibrate import class_shares

    others = [df.y.to_numpy() for k, df in oofs.items() if k != name]
    return class_shares(np.concatenate(others) if others else np.zeros(0, np.int64), n_classes)


def shrunk_oof(oof: pd.DataFrame, classes, shares, weight: float) -> pd.DataFrame:
    """A fold's OOF frame with its class probabilities pulled towards `shares` (calibrate.shrink)."""
    from ncfm.calibrate import shrink

    classes = list(classes)
    return oof.assign(**dict(zip(classes, shrink(oof[classes].to_numpy("float64"), shares, weight).T)))
