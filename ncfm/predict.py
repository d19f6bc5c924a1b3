"""Predict a test stage with every fold of every run, averaging test-time views, then folds,
then runs; calibrate on out-of-fold predictions; write a validated Kaggle CSV.

    ncfm predict --run runs/inception299 [--run runs/other] [--stage 2] --tta 8 [--out submissions/x.csv]

A run of many members (`ncfm train --folds --seeds/--config`) counts as its <config>-seed<S>/ groups.

For each fold model, before any averaging, the per-fold files of ncfm.runs are written:
test predictions (mean over N views) under runs/NAME/predictions/, and the fold's held-out
images under the same N views (fold<K>/oof_tta<N>.csv), so an ensemble or a calibration can be
rebuilt without running a model again (a .json beside each records the model file, the views
and the test images it was made from; when one changes it is predicted again). Each test image
is decoded once (a uint8 cache shared by all folds and views); every batch runs all its views
in a single forward pass. Every fold is checked before anything is written; a fold no better
than the class priors on its own held-out images is named, and kept, left out or shrunk towards
the priors as --weak-folds says (leave_out_weak, shrink_folds).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import NcfmError, runs
from ncfm.competition import Competition
from ncfm.config import PredictAnswer
from ncfm.ensemble import average, ensemble_oof, fit_weights, fold_priors, pool_folds, shrunk_oof
from ncfm.fold import checked
from ncfm.progress import say


# ----------------------------------------------------------------------------- checks
def usable_folds(run_dir: Path, comp: Competition, allow_unfinished: bool = False) -> list[runs.Fold]:
    """The trained folds of a run, each checked before any work: its config, state, checkpoint and
    OOF file readable, trained for the competition's classes and (unless `allow_unfinished`)
    finished. A fold without config.json or state.json (a model copied in) is taken as it is."""
    if not run_dir.is_dir():
        raise NcfmError(f"{run_dir}: run folder not found; train it first with "
                        f"`ncfm train --fold K --run {run_dir}`")
    folds = runs.trained_folds(run_dir)
    if not folds:
        raise NcfmError(f"{run_dir}: no trained fold (no fold<K>/best.keras); run `ncfm train --fold 0 "
                        f"--run {run_dir}` first")
    unfinished = []
    for fold in folds:
        fix = f"retrain that fold ({fold.retrain_hint()}) or move {fold.dir} out of the run to leave it out"
        config = runs.read_config(fold) or {}
        if not runs.family(runs.kind_of(config)).predicted:
            raise NcfmError(f"{run_dir}: a {runs.kind_of(config)} run; predict takes classifier runs. Train a crop "
                            f"classifier on its boxes with `ncfm train --fold K --run runs/crops --detector {run_dir}` "
                            f"and predict with that run")
        runs.check_checkpoint(fold.best, fix)
        classes = fold_classes(fold, comp)
        expected = config.get("crop_classes") or comp.classes  # a crop run classifies the fish classes
        if list(classes) != list(expected):
            raise NcfmError(f"{fold.dir}: trained for the classes {', '.join(classes[:8])}, but the competition "
                            f"has {', '.join(comp.classes[:8])}; predict with the --data-dir it was trained on")
        if not runs.is_finished(fold):
            unfinished.append(fold)
        if fold.oof.is_file():
            runs.read_oof(fold.oof, expected, fix, one_class=comp.task == "single")
    if unfinished and not allow_unfinished:
        raise NcfmError(f"{run_dir}: training not finished for {', '.join(f.name for f in unfinished)} "
                        f"(state.json); rerun `ncfm train --fold K --run {run_dir}` to finish it (it "
                        f"resumes), or pass --allow-unfinished to use its best checkpoint so far")
    return folds


def against_priors(fold: runs.Fold, comp: Competition) -> tuple[float, float, float] | None:
    """(the fold's OOF score, the score of predicting its training class shares on the same images,
    the margin it must beat that by: calibrate.prior_margin) in the competition's metric: what
    train recorded in state.json, or, for a fold trained before it did, computed from oof.csv and
    the manifest the fold was trained on (config.json's folds_csv). None when neither is there to
    judge by."""
    from ncfm.folds import read_manifest
    from ncfm.calibrate import class_shares, prior_margin, prior_score, score

    metric, state = comp.metric, runs.read_state(fold) or {}
    if f"oof_{metric}" in state and f"prior_{metric}" in state and "prior_margin" in state:
        return float(state[f"oof_{metric}"]), float(state[f"prior_{metric}"]), float(state["prior_margin"])
    if comp.task != "single":  # train records these for every fold of another task
        return None
    folds_csv = Path((runs.read_config(fold) or {}).get("folds_csv") or "")
    if not (fold.oof.is_file() and folds_csv.is_file()):
        return None
    classes = fold_classes(fold, comp)
    try:
        manifest, _ = read_manifest(folds_csv, classes=classes)
    except NcfmError:  # changed since: nothing to judge by
        return None
    oof = runs.read_oof(fold.oof, classes)
    train_labels = manifest.label[manifest.fold != fold.index].map({c: i for i, c in enumerate(classes)})
    positive = comp.positive_index(classes)
    labels, probs, shares = oof.y.to_numpy(), oof[classes].to_numpy("float64"), class_shares(train_labels, len(classes))
    return (score(metric, labels, probs, positive), prior_score(metric, labels, shares, positive),
            prior_margin(metric, labels, probs, shares))


# What predict does with a fold that is no better than the class priors on its own held-out images
# (--weak-folds): keep it (every fold averaged with an equal weight); priors: leave out a fold whose
# OOF does not beat the priors at all; margin: also one that beats them by less than twice the
# standard error (calibrate.prior_margin); shrink: keep every fold, each pulled towards the class
# priors by a weight fitted on its own OOF (calibrate.fit_shrinkage). The default was chosen on
# held-out test images of several data sets (docs/weak_folds.md), stage 2 first: shrink was never
# worse than keep beyond 0.01 and best on average; margin lost up to 0.29 and priors up to 0.13.
WEAK_FOLD_RULES = ("keep", "priors", "margin", "shrink")
DEFAULT_WEAK_FOLDS = PredictAnswer.weak_folds
# the flags that change predict's answer for given runs and test images, recorded in calibration.json
# so that the same answer can be made elsewhere (a Kaggle notebook: ncfm.notebook)
ANSWER_OPTIONS = tuple(f.name for f in dataclasses.fields(PredictAnswer))


def leave_out_weak(run_dir: Path, folds: list[runs.Fold], comp: Competition, rule: str, log) -> list[runs.Fold]:
    """The folds to ensemble under `rule` (WEAK_FOLD_RULES). Every rule names the folds no better
    than the class priors; "priors" and "margin" leave them out. If every fold is such, leaving them
    all out would predict nothing: all are kept, with a warning."""
    from ncfm.calibrate import no_better

    if rule not in WEAK_FOLD_RULES:
        raise NcfmError(f"received --weak-folds {rule}; choose one of {', '.join(WEAK_FOLD_RULES)}")
    judged = {fold: against_priors(fold, comp) for fold in folds}

    def weak_by(j) -> bool:
        return no_better(comp.metric, j[0], j[1], j[2] if rule == "margin" else 0.0)

    weak = [fold for fold, j in judged.items() if j is not None and weak_by(j)]
    if not weak:
        return folds
    against, baseline, short = _baseline_words(comp)

    def name(fold) -> str:
        value, priors, margin = judged[fold]
        within = "" if no_better(comp.metric, value, priors) else f", better by less than {margin:.4f}, twice the standard error"
        return f"{fold.name} (OOF {comp.metric_name} {value:.4f}, {short} {priors:.4f}{within})"

    named = ", ".join(map(name, weak))
    if len(weak) == len(folds):
        log(f"WARNING: {run_dir}: every fold is no better than {against}: {named}. "
            f"Keeping them all, but this run predicts no better than that: train it again with more "
            f"epochs (--epochs), a higher learning rate (--lr) or pretrained weights (--weights)")
        return folds
    if rule in ("keep", "shrink"):
        log(f"{run_dir}: keeping {named}, no better than {baseline} on held-out images (--weak-folds {rule})")
        return folds
    log(f"{run_dir}: leaving out {named}, no better than {baseline} on held-out images (--weak-folds "
        f"{rule}); ensembling {len(folds) - len(weak)} of {len(folds)} folds (--weak-folds keep keeps every fold)")
    return [fold for fold in folds if fold not in weak]


def _baseline_words(comp: Competition) -> tuple[str, str, str]:
    """What a fold must beat, in the words of the competition's task: as an action, as a thing, short."""
    from ncfm.task import BASELINE

    if comp.task == "single":
        return "predicting its training class shares", "the class priors", "class priors"
    return BASELINE[comp.kind], BASELINE[comp.kind], "baseline"


def shrink_folds(run_dir: Path, folds: list[runs.Fold], tests: list[np.ndarray], oofs: dict, comp: Competition,
                 log) -> dict[str, float]:
    """--weak-folds shrink: each fold's test and OOF probabilities (in place) become w * p + (1 - w) *
    its training class shares, w in [0, 1] fitted on its own OOF rows (calibrate.fit_shrinkage).
    Returns {fold folder: w}; a fold without OOF keeps w = 1."""
    from ncfm.calibrate import fit_shrinkage, shrink

    if comp.metric != "log_loss" or not oofs:
        return {}
    classes = list(comp.classes)
    weights = {}
    for i, fold in enumerate(folds):
        if fold.name not in oofs:
            continue
        oof = oofs[fold.name]
        shares = fold_priors(oofs, fold.name, len(classes))
        w = fit_shrinkage(oof.y.to_numpy(), oof[classes].to_numpy("float64"), shares)
        tests[i] = shrink(tests[i], shares, w)
        oofs[fold.name] = shrunk_oof(oof, classes, shares, w)
        weights[str(fold.dir)] = float(w)  # unrounded: the report applies it again (report.ensemble_summary)
    log(f"{run_dir}: each fold pulled towards its class priors by a weight fitted on its own OOF (--weak-folds "
        f"shrink; 1 = unchanged): " + ", ".join(f"{Path(f).name} {w:.3f}" for f, w in weights.items()))
    return weights


def fold_classes(fold: runs.Fold, comp: Competition) -> list[str]:
    """The classes a fold predicts (runs.fold_classes), else (a model from before classes were
    recorded) the competition's."""
    return list(runs.fold_classes(fold) or comp.classes)


def prediction_key(fold: runs.Fold, views) -> dict:
    """What a saved prediction file depends on besides its ids: the model file and the views."""
    stat = fold.best.stat()
    return {"model": {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns},
            "views": np.round(np.asarray(views, dtype="float64"), 6).tolist()}


def _refuse_nan(probs: np.ndarray, fold: runs.Fold, what: str) -> None:
    """A model that outputs NaN has diverged; its rows must not pass for unreadable images."""
    nan_rows = int(np.isnan(probs).any(axis=1).sum())
    if nan_rows:
        raise NcfmError(f"{fold.best}: predicts NaN for {nan_rows} of {len(probs)} {what}; the model "
                        f"diverged (see {fold.history}). Retrain the fold ({fold.retrain_hint()}, perhaps "
                        f"with a lower --lr) or move its folder out of the run")


# ----------------------------------------------------------------------------- models
def predict_views(model, images, rows, views, batch_size: int, progress: bool = True,
                  normalise: bool = True) -> np.ndarray:
    """Mean over `views` of the model's probabilities for images[rows] -> (len(rows), classes), each
    row summing to 1 unless not `normalise` (sigmoid outputs: ncfm.task)."""
    from ncfm.batches import make_batches
    from ncfm.model import build_tta_model

    n_classes = int(model.output_shape[-1])
    if len(rows) == 0:
        return np.zeros((0, n_classes))
    tta = build_tta_model(model, views)
    batches = make_batches(images, np.asarray(rows), None, batch_size=batch_size, pad=True)
    per_view = tta.predict(batches, verbose=1 if progress and sys.stdout.isatty() else 0)
    probs = np.asarray(per_view, dtype="float64")[: len(rows)].mean(axis=1)
    return probs / probs.sum(axis=1, keepdims=True) if normalise else probs


def default_batch_size(n_views: int, n_devices: int = 1) -> int:
    """Images per call: about 1024 views on an accelerator (64 on a CPU) on each device, a
    multiple of the number of devices so that each gets as many."""
    from ncfm import runtime

    views_per_call = 1024 if runtime.accelerator() != "cpu" else 64
    return max(1, views_per_call // max(1, n_views)) * n_devices


def predict_run(run_dir: Path, folds: list[runs.Fold], comp: Competition, data_dir: Path, stage: int,
                test: pd.DataFrame, views, *, batch_size: int, force: bool, log,
                fill_rows=(), cache_dir=None) -> tuple[list[np.ndarray], dict]:
    """Test predictions of every fold (views averaged) and the folds' OOF frames under the same
    views ({fold name: frame}); both cached on disk per fold. Decoded pixels go to `cache_dir`
    (default <data_dir>/cache)."""
    import keras

    from ncfm.cache import cache_key, load_images_masked

    classes, n_views, one_class = comp.classes, len(views), comp.task == "single"
    size = runs.fold_image_size(folds[0])
    # a test image replaced since (same name, new bytes or date) makes the saved predictions stale
    test_images = cache_key(data_dir, list(test.path), size)
    pixels, bad = None, []
    tests, oofs = [], {}
    for fold in folds:
        test_path = runs.predictions_path(run_dir, stage, fold, n_views)
        key = prediction_key(fold, views)
        test_key = key | {"test_images": test_images}
        test_probs = None if force else runs.read_predictions(test_path, test.id, classes, test_key)
        if test_probs is not None:  # rows left blank in the file were unreadable when it was written
            recorded = np.flatnonzero(np.isnan(test_probs).any(axis=1))
            _check_unreadable(data_dir, test, recorded, fill_rows, recorded_in=test_path)
            test_probs[recorded] = 1.0 / len(classes)  # placeholder; main gives these rows the priors
        oof = runs.read_oof(fold.oof, classes, one_class=one_class) if fold.oof.is_file() else None
        oof_probs = None
        if oof is not None:  # the held-out images under the same views
            oof_probs = oof[list(classes)].to_numpy("float64") if n_views == 1 else (
                None if force else runs.read_predictions(fold.oof_views(n_views), oof.image, classes, key))
        if test_probs is not None and (oof is None or oof_probs is not None):
            log(f"{fold.dir}: reusing {test_path.name}")
        else:
            model = runs.load_best(fold)
            if test_probs is None:
                if pixels is None:
                    pixels, bad = load_images_masked(data_dir, list(test.path), size, cache_dir=cache_dir)
                    _check_unreadable(data_dir, test, bad, fill_rows)
                log(f"{fold.dir}: {len(test)} test images x {n_views} views")
                test_probs = predict_views(model, pixels, np.arange(len(test)), views, batch_size, normalise=one_class)
                _refuse_nan(test_probs, fold, "test images")
                saved = runs.probability_frame(test.id, test_probs, classes)
                saved.loc[bad, list(classes)] = np.nan  # a black image's prediction is no prediction
                runs.write_predictions(test_path, saved, test_key, unreadable=bad)
            if oof is not None and oof_probs is None:
                oof_probs = _oof_views(model, oof, fold, comp, data_dir, size, views, batch_size, log, cache_dir)
                if oof_probs is None:  # no manifest to find the images: the plain OOF it is
                    oof_probs = oof[list(classes)].to_numpy("float64")
                else:
                    _refuse_nan(oof_probs, fold, "out-of-fold images")
                    out = runs.probability_frame(oof.image, oof_probs, classes)
                    out.insert(1, "label", oof.label)
                    runs.write_predictions(fold.oof_views(n_views), out, key)
            del model
            keras.backend.clear_session()
        tests.append(test_probs)
        if oof is not None:
            oofs[fold.name] = oof.assign(**{c: oof_probs[:, i] for i, c in enumerate(classes)})
    return tests, oofs


# ----------------------------------------------------------------------------- detect, crop, classify
def is_crop_run(folds: list[runs.Fold]) -> bool:
    """Whether a run's folds classify crops of a detector's boxes (`ncfm train --detector`)."""
    return bool((runs.read_config(folds[0]) or {}).get("detector"))


def predict_crop_run(run_dir: Path, folds: list[runs.Fold], comp: Competition, data_dir: Path, stage: int,
                     test: pd.DataFrame, views, *, batch_size: int, force: bool, log,
                     fill_rows=(), crop_boxes: int = 0, cache_dir=None) -> tuple[list[np.ndarray], dict, np.ndarray]:
    """Like predict_run, for a crop run: each fold's crop classifier on the crops of the same
    detector fold's best boxes on the test images (per-fold files saved as for any run; an image's
    crops combined by their boxes' scores, ncfm.combine.combine_boxes; `crop_boxes` > 0 uses only
    the best that many), then combined with the detector's calibrated P(fish) into the
    competition's classes (ncfm.combine.combine). The OOF frames cover every training image: fish
    images through their out-of-fold crops, empty ones through P(fish) alone (their log loss does
    not depend on the crop classifier). The OOF frames carry each image's best box score (column
    BOX_SCORE), and the third value is the test images' (the mean over the detector's folds), for a
    confidence blend."""
    from ncfm import combine
    from ncfm.folds import read_manifest
    from ncfm.crops import read_crop_set

    config = runs.read_config(folds[0]) or {}
    crop_set = read_crop_set(config["crop_set"])
    crop_comp = crop_set.competition(comp)
    empty = [c for c in comp.classes if c not in crop_set.classes]
    detector = Path(config["detector"])
    det_folds = {f.index: f for f in runs.all_folds(detector)}
    det_config = runs.read_config(next(iter(det_folds.values()))) or {}
    manifest, _ = read_manifest(Path(det_config["folds_csv"]), classes=comp.classes)
    found = pd.concat([runs.read_found_boxes(f.oof_boxes) for f in det_folds.values()], ignore_index=True)
    best_score = found.groupby("image").score.max()
    scores = best_score.reindex(manifest.image).fillna(0.0).to_numpy()
    fit = combine.fit_fish_probability(scores, ~manifest.label.isin(empty).to_numpy())
    log(f"{detector}: P(fish) = logistic({fit['a']:.3f} * logit(best box score) + {fit['b']:.3f}), fitted on "
        f"{len(manifest)} out-of-fold images")
    p_fish_oof = pd.Series(combine.fish_probability(scores, fit), index=manifest.image)
    score_oof = pd.Series(scores, index=manifest.image)

    if set(crop_set.test_ids.get(stage, ())) != set(test.path) or any(
            f.index not in crop_set.test_folds.get(stage, ()) for f in folds):
        crop_set = _cut_test_crops(crop_set, detector, folds, comp, data_dir, stage, test.path, cache_dir, log)
    tests, oofs, test_scores = [], {}, []
    for fold in folds:
        crops = crop_set.test_crops(stage, fold.index)
        if crop_boxes:
            crops = crops[crops["rank"] < crop_boxes]
        image_of = pd.Index(test.path).get_indexer(crops.image)
        lacking = sorted(set(test.path) - set(crops.image))
        if lacking or (image_of < 0).any():
            raise NcfmError(f"{crop_set.dir}: no crop for {lacking[0] if lacking else crops.image.iloc[0]}; the test "
                            f"images changed since the crops were cut: rerun `ncfm train --detector {detector} ...` "
                            f"to cut them")
        fold_test = pd.DataFrame({"id": crops.crop.to_numpy(), "path": crops.crop.to_numpy()})
        fold_tests, fold_oofs = predict_run(run_dir, [fold], crop_comp, crop_set.dir, stage, fold_test, views,
                                            batch_size=batch_size, force=force, log=log, fill_rows=None,
                                            cache_dir=cache_dir)
        per_image = combine.combine_boxes(fold_tests[0], image_of, crops.score.to_numpy(), len(test))
        det_found = runs.read_found_boxes(det_folds[fold.index].test_boxes(stage))
        fold_scores = det_found.groupby("image").score.max().reindex(test.path).fillna(0.0).to_numpy()
        test_scores.append(fold_scores)
        tests.append(combine.combine(combine.fish_probability(fold_scores, fit), per_image, comp.classes,
                                     crop_set.classes, empty))
        if fold.name in fold_oofs:
            oofs[fold.name] = _combined_oof(fold_oofs[fold.name], crop_set, fold.index, manifest, p_fish_oof,
                                            comp, empty, crop_boxes).assign(
                **{BOX_SCORE: lambda df: score_oof.reindex(df.image).to_numpy()})
    test_score = np.mean(test_scores, axis=0)
    return tests, oofs, test_score


def _cut_test_crops(crop_set, detector: Path, folds: list[runs.Fold], comp: Competition, data_dir: Path, stage: int,
                    test_ids, cache_dir, log):
    """The crop set with crops of these test images: each detector fold finds its boxes on them (or
    reads the boxes it found before) and they are cut into the crop set (ncfm.crops.add_test_crops).
    What a crop run needs on test images it has not seen: a new stage, a Kaggle notebook's hidden test set."""
    from ncfm.crops import add_test_crops
    from ncfm.detect import find_test_boxes

    log(f"{crop_set.dir}: no crops of these {len(test_ids)} stage-{stage} test images yet; finding their boxes "
        f"with {detector} and cutting them")
    found = {f.index: find_test_boxes(detector, f.index, data_dir, comp, stage, cache_dir=cache_dir)[1] for f in folds}
    return add_test_crops(crop_set, data_dir, stage, found)


BOX_SCORE = "box_score"  # an OOF frame's column of each image's best box score (crop runs)


def _combined_oof(crop_oof: pd.DataFrame, crop_set, fold: int, manifest: pd.DataFrame, p_fish: pd.Series,
                  comp: Competition, empty, crop_boxes: int = 0) -> pd.DataFrame:
    from ncfm import combine

    crops = crop_set.validation_crops(fold).set_index("image")
    if crop_boxes:
        crops = crops[crops["rank"] < crop_boxes]
    crop_oof = crop_oof[crop_oof.image.isin(crops.index)]
    images = manifest[manifest.fold == fold].reset_index(drop=True)
    sources = crops.source.reindex(crop_oof.image).to_numpy()
    row_of = pd.Index(images.image).get_indexer(sources)
    boxed = row_of >= 0
    uniform = np.full(len(crop_set.classes), 1.0 / len(crop_set.classes))
    probs = np.tile(uniform, (len(images), 1))  # empty images: no crop, and no bearing on their loss
    with_crops = np.unique(row_of[boxed])
    if len(with_crops):
        local = pd.Index(with_crops).get_indexer(row_of[boxed])
        probs[with_crops] = combine.combine_boxes(crop_oof[list(crop_set.classes)].to_numpy("float64")[boxed], local,
                                                  crops.score.reindex(crop_oof.image).to_numpy()[boxed],
                                                  len(with_crops))
    combined = combine.combine(p_fish.reindex(images.image).to_numpy(), probs, comp.classes, crop_set.classes, empty)
    out = runs.probability_frame(images.image, combined, comp.classes)
    out.insert(1, "label", images.label.to_numpy())
    out.insert(2, "y", [comp.classes.index(label) for label in images.label])
    return out


def _oof_views(model, oof, fold, comp, data_dir, size, views, batch_size, log, cache_dir=None):
    """The fold's held-out images under the same views as the test set (for honest calibration)."""
    from ncfm.cache import load_images
    from ncfm.folds import folds_csv_path, read_manifest

    folds_csv = Path((runs.read_config(fold) or {}).get("folds_csv", ""))
    if not folds_csv.is_file():
        folds_csv = folds_csv_path(data_dir)
    if not folds_csv.is_file():
        log(f"{folds_csv}: not found; calibrating on the plain (single-view) OOF predictions")
        return None
    manifest, _ = read_manifest(folds_csv, comp=comp)
    pixels = load_images(data_dir, list(manifest.image), size, cache_dir=cache_dir)  # the cache training built
    rows = pd.Index(manifest.image).get_indexer(oof.image)
    if (rows < 0).any():
        log(f"{folds_csv}: does not hold this fold's images; calibrating on the plain OOF")
        return None
    return predict_views(model, pixels, rows, views, batch_size, progress=False, normalise=comp.task == "single")


def _check_unreadable(data_dir: Path, test: pd.DataFrame, bad, fill_rows, recorded_in: Path | None = None) -> None:
    if len(bad) == 0:
        return
    names = [str(data_dir / test.path.iloc[i]) for i in bad]
    if fill_rows is None:  # sentinel: not allowed to fill
        when = (f" when {recorded_in} was written (pass --recompute to read them again once replaced)"
                if recorded_in else "")
        raise NcfmError(f"{len(names)} unreadable test image(s){when}; no row may be dropped from a "
                        f"submission. Replace them, or pass --fill-unreadable to give them the "
                        f"class priors:\n  " + "\n  ".join(names))
    fill_rows.extend(int(i) for i in bad if int(i) not in fill_rows)  # once, however many folds


# ----------------------------------------------------------------------------- command
def main(args) -> int:
    from ncfm import runtime
    from ncfm.augment import tta_parameters
    from ncfm.dataset import competition_for, find_test_images

    devices = checked(runtime.resolve_devices, args.devices)
    checked(runtime.check_batch_split, args.batch_size, devices, args.devices, True)
    data_dir = Path(args.data_dir)
    comp = competition_for(data_dir, getattr(args, "folds_csv", None))
    stage = comp.default_stage if args.stage is None else args.stage
    # a run of many members (`ncfm train --folds --seeds/--config`): each <config>-seed<S>/ group is a run
    run_dirs = [member for r in args.run for member in runs.member_runs(r)]
    first = Path(args.run[0])  # names the CSV and keeps calibration.json
    default_name = f"{first.name}_stage{stage}.csv" if len(comp.stages) > 1 else f"{first.name}.csv"
    out = Path(args.out) if args.out else Path("submissions") / default_name
    if out.exists() and not args.force:
        raise NcfmError(f"{out}: already exists; pass --force to overwrite it or choose another --out")
    # fail before any work if a run is missing, damaged, unfinished or made for other classes
    run_folds = [usable_folds(run, comp, args.allow_unfinished) for run in run_dirs]
    crop_runs = [is_crop_run(folds) for folds in run_folds]
    if args.run_weights == "confidence" and (len(run_dirs) != 2 or sum(crop_runs) != 1):
        raise NcfmError(f"--run-weights confidence blends one crop run (`ncfm train --detector`) with one whole-image "
                        f"run, per image by the detector's confidence; received {len(run_dirs)} run(s), "
                        f"{sum(crop_runs)} of them crop runs: {', '.join(map(str, run_dirs))}")

    log = say

    weak_rule = getattr(args, "weak_folds", None) or DEFAULT_WEAK_FOLDS
    kept = [leave_out_weak(run, folds, comp, weak_rule, log) for run, folds in zip(run_dirs, run_folds)]
    left_out = [str(fold.dir) for folds, used in zip(run_folds, kept) for fold in folds if fold not in used]
    run_folds = kept

    test, source = find_test_images(data_dir, stage, comp)
    kinds = [k for k in args.views.split(",") if k]
    views = tta_parameters(args.tta, kinds, args.seed)
    batch_size = args.batch_size or default_batch_size(len(views), len(devices))
    log(f"stage {stage}: {len(test)} test images ({source}); {runtime.describe()}")
    if devices_line := runtime.describe_devices(devices, args.devices):
        log(devices_line)
    fill_rows: list[int] | None = [] if args.fill_unreadable else None

    cache_dir = getattr(args, "cache_dir", None)
    if comp.task != "single":
        return _predict_task(args, comp, data_dir, stage, test, views, batch_size, devices, run_dirs, run_folds,
                             left_out, weak_rule, fill_rows, out, first, cache_dir, log)
    run_tests, run_oofs, shrunk, box_scores = [], [], {}, {}
    with runtime.data_parallel(devices):  # every model is loaded and predicts inside
        for run, folds, crop_run in zip(run_dirs, run_folds, crop_runs):
            if crop_run:
                tests, oofs, box_scores[str(run)] = predict_crop_run(
                    run, folds, comp, data_dir, stage, test, views, batch_size=batch_size, force=args.recompute,
                    log=log, fill_rows=fill_rows, crop_boxes=getattr(args, "crop_boxes", 0) or 0, cache_dir=cache_dir)
            else:
                tests, oofs = predict_run(run, folds, comp, data_dir, stage, test, views, batch_size=batch_size,
                                          force=args.recompute, log=log, fill_rows=fill_rows, cache_dir=cache_dir)
            if weak_rule == "shrink":
                shrunk.update(shrink_folds(run, folds, tests, oofs, comp, log))
            run_tests.append(average(tests, args.mean))
            run_oofs.append(pool_folds(oofs, comp.classes))
    probs = average(run_tests, args.mean)

    pooled = ensemble_oof(run_oofs, comp.classes, args.mean, names=[str(r) for r in run_dirs])
    calibration = {"method": args.calibrate, "temperature": 1.0, "floor": 0.0, "metric": comp.metric}
    if pooled is not None:
        _print_oof(run_dirs, run_oofs, pooled, comp, log, folds_left_out=bool(left_out))
    if args.run_weights == "oof" and len(run_dirs) > 1:
        if pooled is None:
            raise NcfmError("--run-weights oof needs out-of-fold predictions from every run; one has none")
        weights = fit_weights(pooled.run_probs, pooled.y)
        probs = np.tensordot(weights, np.stack(run_tests), axes=1)
        pooled = pooled._replace(probs=np.tensordot(weights, np.stack(pooled.run_probs), axes=1))
        calibration["run_weights"] = dict(zip(map(str, run_dirs), weights.tolist()))
        log("run weights fitted on OOF: " + ", ".join(f"{r} {w:.3f}" for r, w in zip(run_dirs, weights))
            + f"; OOF {comp.metric_name} of the blend {_score(comp, pooled.y, pooled.probs):.4f}")
    if args.run_weights == "confidence":
        if pooled is None:
            raise NcfmError("--run-weights confidence needs out-of-fold predictions from both runs; one has none")
        probs, pooled, calibration["run_weights"] = _confidence_blend(run_dirs, crop_runs, run_tests, run_oofs, pooled,
                                                                      box_scores, comp, log)
    probs = _calibrated(probs, pooled, calibration, comp, args.calibrate, args.clip, log)
    if fill_rows:
        probs[fill_rows] = _priors(run_oofs, comp.classes)
        log(f"{len(fill_rows)} unreadable test image(s) given the class priors: "
            + ", ".join(test.id.iloc[i] for i in fill_rows))

    return _write_answer(args, comp, data_dir, stage, test, probs, out, first, calibration | {
        "runs": [str(r) for r in run_dirs], "tta": len(views), "stage": stage, "mean": args.mean,
        "weak_folds": weak_rule, "left_out": left_out, "shrink": shrunk}, log)


def _write_answer(args, comp: Competition, data_dir: Path, stage: int, test: pd.DataFrame, outputs, out: Path,
                  first: Path, record: dict, log, rule: dict | None = None) -> int:
    """The validated CSV of the test outputs (under `rule` for another task), and calibration.json:
    `record` and the answer-changing flags used (ANSWER_OPTIONS)."""
    from ncfm.dataset import read_sample_submission
    from ncfm.submission import build_submission, write_submission

    sample = read_sample_submission(data_dir, stage, comp)
    sample_ids = list(sample.iloc[:, 0]) if sample is not None else list(test.id)
    written = write_submission(build_submission(list(test.id), outputs, comp, rule), out, sample_ids, comp,
                               force=args.force)
    runs.write_calibration(first, record | {"options": {name: getattr(args, name, None) for name in ANSWER_OPTIONS}
                                            | {"weak_folds": record["weak_folds"]}})
    validated = ("validated" if sample is not None else
                 "its form checked, but not its ids: no sample submission to check them against")
    log(f"wrote {written} ({len(test)} rows, {len(record['runs'])} run(s) x folds x {record['tta']} views, "
        f"{validated})")
    return 0


def _predict_task(args, comp: Competition, data_dir: Path, stage: int, test: pd.DataFrame, views, batch_size: int,
                  devices, run_dirs, run_folds, left_out, weak_rule, fill_rows, out: Path, first: Path,
                  cache_dir, log) -> int:
    """predict for several labels, a number or a grade (ncfm.task): the sigmoid outputs averaged over
    views, folds and runs (arithmetic means: a mean of scaled numbers is the scaled mean); the answer
    rule fitted on the pooled OOF (task.fit_answer: thresholds, grade cut points, the clipping range;
    a richer rule only where it wins on held-out folds) and recorded in calibration.json; the CSV in
    the sample's form."""
    from ncfm import runtime, task

    if args.run_weights != "equal":
        raise NcfmError(f"--run-weights {args.run_weights} weighs runs by their log loss; a {comp.kind} competition "
                        f"averages its runs equally (--run-weights equal)")
    if args.mean != "arithmetic" or args.clip:
        log(f"--mean {args.mean} / --clip {args.clip:g}: not used for a {comp.kind} competition (arithmetic means; "
            f"its answer rule is fitted on OOF instead)")
    run_tests, pooled = [], []
    with runtime.data_parallel(devices):
        for run, folds in zip(run_dirs, run_folds):
            tests, oofs = predict_run(run, folds, comp, data_dir, stage, test, views, batch_size=batch_size,
                                      force=args.recompute, log=log, fill_rows=fill_rows, cache_dir=cache_dir)
            run_tests.append(np.mean(tests, axis=0))
            if oofs:
                pooled.append(pd.concat([df.assign(fold=name) for name, df in oofs.items()], ignore_index=True)
                              .drop_duplicates("image").set_index("image").sort_index())
    outputs = np.mean(run_tests, axis=0)
    classes = list(comp.classes)
    record = {"method": "none", "metric": comp.metric, "temperature": 1.0, "floor": 0.0}
    rule = task.default_rule(comp)
    if len(pooled) == len(run_dirs) and pooled:
        common = pooled[0].index
        for frame in pooled[1:]:
            common = common.intersection(frame.index)
        labels = pooled[0].loc[common, "label"]
        oof = np.mean([frame.loc[common, classes].to_numpy("float64") for frame in pooled], axis=0)
        folds = pooled[0].loc[common, "fold"].to_numpy()
        for name in np.unique(folds):
            rows = folds == name
            log(f"  {name}: OOF {comp.metric_name} {task.score(comp, labels[rows], oof[rows]):.4f} "
                f"({task.FIXED_RULE[comp.kind]}; {rows.sum()} images)")
        fitted = task.fit_answer(comp, labels, oof, folds)
        rule = fitted["rule"]
        shown = "; ".join(f"{name} {v['on_oof']:.4f} on OOF, {v['held_out']:.4f} held out"
                          for name, v in fitted["scores"].items())
        log(f"answer rule fitted on {len(labels)} OOF images ({comp.metric_name}): {shown}; using {fitted['chosen']}"
            + _rule_text(comp, rule))
        record |= {"answer": fitted, "oof_score": fitted["scores"][fitted["chosen"]]["held_out"],
                   "oof_score_fixed": fitted["scores"]["fixed"]["on_oof"]}
        fill = task.targets(comp, labels).mean(axis=0)
    else:
        log("no out-of-fold predictions found: answering with the fixed rule (" + task.FIXED_RULE[comp.kind] + ")")
        record["answer"] = {"rule": rule, "chosen": "fixed", "scores": {}}
        fill = outputs.mean(axis=0)
    if fill_rows:
        outputs[fill_rows] = fill
        log(f"{len(fill_rows)} unreadable test image(s) given the training average: "
            + ", ".join(test.id.iloc[i] for i in fill_rows))

    return _write_answer(args, comp, data_dir, stage, test, outputs, out, first, record | {
        "runs": [str(r) for r in run_dirs], "tta": len(views), "stage": stage, "mean": "arithmetic",
        "weak_folds": weak_rule, "left_out": left_out, "shrink": {}}, log, rule)


def _rule_text(comp: Competition, rule: dict) -> str:
    if comp.kind == "multilabel":
        return " (thresholds " + ", ".join(f"{c} {t:.2f}" for c, t in zip(comp.classes, rule["thresholds"])) + ")"
    if comp.kind == "ordinal":
        return " (cut points " + ", ".join(f"{c:.2f}" for c in rule["cuts"]) + ")"
    return f" (clipped to {rule['clip'][0]:g}..{rule['clip'][1]:g})"


def _calibrated(probs, pooled, calibration: dict, comp: Competition, method: str, clip: float, log) -> np.ndarray:
    """The test probabilities under the calibration fitted on the pooled OOF (`method`; none for a
    metric a temperature does not change) and the manual --clip floor; `calibration` gets the record."""
    from ncfm import calibrate as cal

    if pooled is not None:
        calibration["oof_score"] = _score(comp, pooled.y, pooled.probs)
    if comp.metric != "log_loss":
        if method != "none":
            log(f"not calibrating: {comp.metric_name} does not change with a temperature or floor")
        calibration["method"] = "none"
    elif pooled is None:
        if method != "none":
            log("no out-of-fold predictions found: not calibrating")
    elif method != "none":
        calibration.update(cal.fit_calibration(pooled.y, pooled.probs, method, groups=pooled.fold))
        _print_calibration(calibration, method, log)
    probs = cal.calibrate(probs, calibration["temperature"], calibration["floor"])
    if clip:
        probs = cal.apply_floor(probs, clip)
        calibration["clip"] = clip
        if pooled is not None:  # show what the manual floor does, as for a fitted one
            unclipped = cal.calibrate(pooled.probs, calibration["temperature"], calibration["floor"])
            before = cal.kaggle_log_loss(pooled.y, unclipped)
            after = cal.kaggle_log_loss(pooled.y, cal.apply_floor(unclipped, clip))
            log(f"clip {clip:g}: OOF log loss {before:.4f} -> {after:.4f}")
    return probs


def _confidence_blend(run_dirs, crop_runs, run_tests, run_oofs, pooled, box_scores, comp: Competition, log):
    """w * crop run + (1 - w) * whole-image run per image, w = logistic(a * logit(best box score) + b)
    fitted on the pooled OOF (ncfm.combine.fit_confidence_blend). -> (test probs, pooled OOF, record)."""
    from ncfm.combine import box_weight, fit_confidence_blend

    c = crop_runs.index(True)
    crop_run, whole = run_dirs[c], 1 - c
    oof_scores = run_oofs[c].drop_duplicates("image").set_index("image")[BOX_SCORE].reindex(pooled.images).to_numpy()
    fit = fit_confidence_blend(pooled.run_probs[c], pooled.run_probs[whole], oof_scores, pooled.y)
    w_oof, w_test = box_weight(oof_scores, fit), box_weight(box_scores[str(crop_run)], fit)
    probs = w_test[:, None] * run_tests[c] + (1 - w_test[:, None]) * run_tests[whole]
    pooled = pooled._replace(probs=w_oof[:, None] * pooled.run_probs[c] + (1 - w_oof[:, None]) * pooled.run_probs[whole])
    at = {s: float(box_weight(np.array([s]), fit)[0]) for s in (0.05, 0.5, 0.95)}
    log(f"confidence blend fitted on OOF: the crops of {crop_run} weigh logistic({fit['a']:.3f} * logit(best box "
        f"score) + {fit['b']:.3f}) against {run_dirs[whole]} (" + ", ".join(f"{w:.2f} at score {s:g}" for s, w in at.items())
        + f"; {w_test.mean():.2f} on average over the test images); OOF {comp.metric_name} of the blend "
        f"{_score(comp, pooled.y, pooled.probs):.4f}")
    record = {"confidence": {k: round(v, 4) for k, v in fit.items()}, "crop_run": str(crop_run),
              "whole_run": str(run_dirs[whole]), "mean_test_weight": round(float(w_test.mean()), 4)}
    return probs, pooled, record


def _score(comp: Competition, y, probs) -> float:
    from ncfm.calibrate import score

    return score(comp.metric, y, probs, positive=comp.positive_index())


def _print_oof(run_dirs, run_oofs, pooled, comp: Competition, log, folds_left_out: bool = False) -> None:
    for run, oof in zip(run_dirs, run_oofs):
        for name, rows in oof.groupby("fold", sort=False):
            probs = rows[list(comp.classes)].to_numpy("float64")
            log(f"  {run} {name}: OOF {comp.metric_name} {_score(comp, rows.y.to_numpy(), probs):.4f} "
                f"({len(rows)} images)")
    if len(run_dirs) > 1:
        for run, probs in zip(run_dirs, pooled.run_probs):
            log(f"OOF {comp.metric_name} of {run} on the shared images: {_score(comp, pooled.y, probs):.4f}")
    folds = "the folds kept" if folds_left_out else "all folds"
    log(f"OOF {comp.metric_name}, {folds}{' and runs' if len(run_dirs) > 1 else ''}: "
        f"{_score(comp, pooled.y, pooled.probs):.4f} ({len(pooled.y)} images)")


def _print_calibration(calibration: dict, method: str, log) -> None:
    if calibration["applied"]:
        log(f"calibration ({method}): temperature {calibration['temperature']:.3f}, floor "
            f"{calibration['floor']:.4f}; OOF log loss {calibration['before']:.4f} -> "
            f"{calibration['after']:.4f}; {calibration['held_out']:.4f} on held-out {calibration['held_out_by']}")
    else:
        fitted = calibration["rejected"]
        log(f"calibration ({method}): not applied. Fitted on all OOF rows (temperature "
            f"{fitted['temperature']:.3f}, floor {fitted['floor']:.4f}) it lowers their log loss "
            f"{calibration['before']:.4f} -> {fitted['after']:.4f}, but fitted without each of the "
            f"{calibration['held_out_by']} in turn it gives them {calibration['held_out']:.4f}: it fits noise")


def _priors(run_oofs, classes) -> np.ndarray:
    from ncfm.calibrate import class_shares

    labels = [oof.y.to_numpy() for oof in run_oofs if oof is not None]
    return class_shares(np.concatenate(labels) if labels else [], len(classes))
