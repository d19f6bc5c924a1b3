"""Predict a test stage with every fold of every run, averaging test-time views, then folds,
then runs; calibrate on out-of-fold predictions; write a validated Kaggle CSV.

    ncfm predict --run runs/inception299 [--run runs/other] --stage 2 --tta 8 --out submissions/x.csv

For each fold model, writes before any averaging:
    runs/NAME/predictions/stage<S>_fold<K>_tta<N>.csv   test predictions (mean over N views)
    runs/NAME/fold<K>/oof_tta<N>.csv                    its held-out images, same N views
so an ensemble or a calibration can be rebuilt without running a model again (a .json beside
each file records the model file and the views it was made with; a retrained fold or other
views make it stale and it is recomputed). Each test image
is decoded once (a uint8 cache shared by all folds and views); every batch runs all its views
in a single forward pass.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import CLASSES, NcfmError
from ncfm.fileio import atomic_write_text


# ----------------------------------------------------------------------------- pure core
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


def fold_dirs(run_dir: Path, allow_unfinished: bool = False) -> list[Path]:
    """The trained folds of a run, fold<K>/ with best.keras, in fold order.

    Other folders (fold0.bak/, fold0_old/) are not folds. A fold whose state.json says its
    training has not finished (interrupted, or still running: best.keras is written as it
    goes) is refused unless `allow_unfinished`; a fold without state.json (a model copied in
    from elsewhere) is taken as it is.
    """
    if not run_dir.is_dir():
        raise NcfmError(f"{run_dir}: run folder not found; train it first with "
                        f"`ncfm train --fold K --run {run_dir}`")
    found = sorted((p for p in run_dir.iterdir() if re.fullmatch(r"fold\d+", p.name)
                    and (p / "best.keras").is_file()), key=lambda p: int(p.name[4:]))
    if not found:
        raise NcfmError(f"{run_dir}: no trained fold (no fold<K>/best.keras); run `ncfm train --fold 0 "
                        f"--run {run_dir}` first")
    unfinished = [p for p in found if not _finished(p)]
    if unfinished and not allow_unfinished:
        raise NcfmError(f"{run_dir}: training not finished for {', '.join(p.name for p in unfinished)} "
                        f"(state.json); rerun `ncfm train --fold K --run {run_dir}` to finish it (it "
                        f"resumes), or pass --allow-unfinished to use its best checkpoint so far")
    return found


def _finished(fold_dir: Path) -> bool:
    try:
        return bool(json.loads((fold_dir / "state.json").read_text()).get("finished", True))
    except FileNotFoundError:
        return True  # a model copied in without its training state
    except (OSError, ValueError, AttributeError):
        return False


def _frame(ids, probs, id_column="image") -> pd.DataFrame:
    df = pd.DataFrame(np.asarray(probs, dtype="float64"), columns=list(CLASSES))
    df.insert(0, id_column, list(ids))
    return df


def prediction_key(fold_dir: Path, views) -> dict:
    """What a saved prediction file depends on besides its ids: the model file and the views."""
    stat = (fold_dir / "best.keras").stat()
    return {"model": {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns},
            "views": np.round(np.asarray(views, dtype="float64"), 6).tolist()}


def _write_probs(path: Path, df: pd.DataFrame, key: dict, unreadable=()) -> None:
    """The predictions, and beside them (.json) what they depend on and which rows were left
    blank because their image could not be read."""
    atomic_write_text(path, df.to_csv(index=False, float_format="%.8f"))
    record = key | {"unreadable": sorted(int(i) for i in unreadable)}
    atomic_write_text(path.with_suffix(".json"), json.dumps(record) + "\n")


def _read_probs(path: Path, ids, key: dict | None = None) -> np.ndarray | None:
    """Saved predictions for exactly these ids (in this order) made by the same model with the
    same views (the `key` in the .json beside the file), or None when stale/absent. Blank (NaN)
    rows must be exactly the unreadable images the .json records, else the file is not used."""
    if not path.is_file():
        return None
    unreadable: list = []
    if key is not None:
        sidecar = path.with_suffix(".json")
        try:
            record = json.loads(sidecar.read_text())
            unreadable = record.pop("unreadable", None)
            if record != key or unreadable is None:
                return None
        except (OSError, ValueError, AttributeError):
            return None
    df = pd.read_csv(path)
    # test files are image,ALB..YFT; OOF files carry a label column after the image
    if list(df.iloc[:, 0]) != list(ids) or [c for c in df.columns if c in CLASSES] != list(CLASSES):
        return None
    probs = df[list(CLASSES)].to_numpy("float64")
    if np.flatnonzero(np.isnan(probs).any(axis=1)).tolist() != sorted(unreadable):
        return None
    return probs


def _refuse_nan(probs: np.ndarray, fold_dir: Path, what: str) -> None:
    """A model that outputs NaN has diverged; its rows must not pass for unreadable images."""
    nan_rows = int(np.isnan(probs).any(axis=1).sum())
    if nan_rows:
        raise NcfmError(f"{fold_dir / 'best.keras'}: predicts NaN for {nan_rows} of {len(probs)} {what}; "
                        f"the model diverged (see {fold_dir / 'history.csv'}). Retrain the fold "
                        f"(`ncfm train --fold {fold_dir.name[4:]} --run {fold_dir.parent} --retrain`, perhaps "
                        f"with a lower --lr) or remove its folder from the run")


# ----------------------------------------------------------------------------- models
def predict_views(model, images, rows, views, batch_size: int, progress: bool = True) -> np.ndarray:
    """Mean over `views` of the model's probabilities for images[rows] -> (len(rows), 8)."""
    from ncfm.model import build_tta_model
    from ncfm.train import make_batches

    if len(rows) == 0:
        return np.zeros((0, len(CLASSES)))
    tta = build_tta_model(model, views)
    batches = make_batches(images, np.asarray(rows), None, batch_size=batch_size, pad=True)
    per_view = tta.predict(batches, verbose=1 if progress and sys.stdout.isatty() else 0)
    probs = np.asarray(per_view, dtype="float64")[: len(rows)].mean(axis=1)
    return probs / probs.sum(axis=1, keepdims=True)


def default_batch_size(n_views: int) -> int:
    from ncfm import runtime

    views_per_call = 1024 if runtime.accelerator() != "cpu" else 64
    return max(1, views_per_call // max(1, n_views))


def predict_run(run_dir: Path, data_dir: Path, stage: int, test: pd.DataFrame, views, *,
                batch_size: int, force: bool, log, fill_rows=(),
                allow_unfinished: bool = False) -> tuple[list[np.ndarray], list[dict]]:
    """Test and OOF predictions (views averaged) of every fold of one run, cached on disk."""
    import keras

    from ncfm import model as _registers_layers  # noqa: F401  (custom layers for load_model)
    from ncfm.cache import cache_key, load_images, load_images_masked
    from ncfm.train import read_manifest

    n_views = len(views)
    folds = fold_dirs(run_dir, allow_unfinished)
    size = int(json.loads((folds[0] / "config.json").read_text())["image_size"])
    out_dir = run_dir / "predictions"
    out_dir.mkdir(exist_ok=True)
    # a test image replaced since (same name, new bytes or date) makes the saved predictions stale
    test_images = cache_key(data_dir, list(test.path), size)
    pixels = None
    tests, oofs = [], []
    for fold_dir in folds:
        cfg = json.loads((fold_dir / "config.json").read_text())
        test_path = out_dir / f"stage{stage}_{fold_dir.name}_tta{n_views}.csv"
        oof_path = fold_dir / f"oof_tta{n_views}.csv"
        key = prediction_key(fold_dir, views)
        test_key = key | {"test_images": test_images}
        test_probs = None if force else _read_probs(test_path, test.id, test_key)
        if test_probs is not None:  # rows left blank in the file were unreadable when it was written
            recorded = np.flatnonzero(np.isnan(test_probs).any(axis=1))
            _check_unreadable(data_dir, test, recorded, fill_rows, recorded_in=test_path)
            test_probs[recorded] = 1.0 / len(CLASSES)  # placeholder; main gives these rows the priors
        oof_plain = pd.read_csv(fold_dir / "oof.csv") if (fold_dir / "oof.csv").is_file() else None
        oof_probs = None if (force or oof_plain is None) else _read_probs(oof_path, oof_plain.image, key)
        if test_probs is not None and (oof_probs is not None or oof_plain is None):
            log(f"{fold_dir}: reusing {test_path.name}")
        else:
            model = keras.saving.load_model(fold_dir / "best.keras", compile=False)
            if test_probs is None:
                if pixels is None:
                    pixels, bad = load_images_masked(data_dir, list(test.path), size)
                    _check_unreadable(data_dir, test, bad, fill_rows)
                log(f"{fold_dir}: {len(test)} test images x {n_views} views")
                test_probs = predict_views(model, pixels, np.arange(len(test)), views, batch_size)
                _refuse_nan(test_probs, fold_dir, "test images")
                saved = _frame(test.id, test_probs)
                saved.loc[bad, list(CLASSES)] = np.nan  # a black image's prediction is no prediction
                _write_probs(test_path, saved, test_key, unreadable=bad)
            if oof_plain is not None and oof_probs is None:
                oof_probs = _oof_views(model, oof_plain, cfg, data_dir, size, views, batch_size,
                                       load_images, read_manifest, log)
                if oof_probs is not None:
                    _refuse_nan(oof_probs, fold_dir, "out-of-fold images")
                    out = _frame(oof_plain.image, oof_probs)
                    out.insert(1, "label", oof_plain.label)
                    _write_probs(oof_path, out, key)
            del model
            keras.backend.clear_session()
        tests.append(test_probs)
        if oof_plain is not None:
            oofs.append(dict(fold=fold_dir.name, image=list(oof_plain.image), label=list(oof_plain.label),
                             probs=oof_probs if oof_probs is not None
                             else oof_plain[list(CLASSES)].to_numpy("float64")))
    return tests, oofs


def _oof_views(model, oof_plain, cfg, data_dir, size, views, batch_size, load_images, read_manifest, log):
    """The fold's held-out images under the same views as the test set (for honest calibration)."""
    if len(views) == 1:
        return oof_plain[list(CLASSES)].to_numpy("float64")
    folds_csv = Path(cfg.get("folds_csv", ""))
    if not folds_csv.is_file():
        folds_csv = data_dir / "folds.csv"
    if not folds_csv.is_file():
        log(f"{folds_csv}: not found; calibrating on the plain (single-view) OOF predictions")
        return None
    manifest, _ = read_manifest(folds_csv)
    pixels = load_images(data_dir, list(manifest.image), size)  # the cache training built
    rows = pd.Index(manifest.image).get_indexer(oof_plain.image)
    if (rows < 0).any():
        log(f"{folds_csv}: does not hold this fold's images; calibrating on the plain OOF")
        return None
    return predict_views(model, pixels, rows, views, batch_size, progress=False)


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
    from ncfm import calibrate as cal
    from ncfm import runtime
    from ncfm.augment import tta_parameters
    from ncfm.dataset import find_test_images, read_sample_submission
    from ncfm.submission import build_submission, write_submission

    data_dir = Path(args.data_dir)
    runs = [Path(r) for r in args.run]
    out = Path(args.out) if args.out else Path("submissions") / f"{runs[0].name}_stage{args.stage}.csv"
    if out.exists() and not args.force:
        raise NcfmError(f"{out}: already exists; pass --force to overwrite it or choose another --out")
    for run in runs:
        fold_dirs(run, args.allow_unfinished)  # fail before any work if a run is missing or unfinished

    def log(message):
        print(message, flush=True)

    test, source = find_test_images(data_dir, args.stage)
    log(f"stage {args.stage}: {len(test)} test images ({source}); {runtime.describe()}")
    kinds = [k for k in args.views.split(",") if k]
    views = tta_parameters(args.tta, kinds, args.seed)
    batch_size = args.batch_size or default_batch_size(len(views))
    fill_rows: list[int] | None = [] if args.fill_unreadable else None

    run_tests, run_oofs = [], []
    for run in runs:
        tests, oofs = predict_run(run, data_dir, args.stage, test, views, batch_size=batch_size,
                                  force=args.recompute, log=log, fill_rows=fill_rows,
                                  allow_unfinished=args.allow_unfinished)
        run_tests.append(average(tests, args.mean))
        run_oofs.append(oofs)
    probs = average(run_tests, args.mean)

    calibration = {"method": args.calibrate, "temperature": 1.0, "floor": 0.0}
    oof_labels, oof_probs, oof_folds = _ensemble_oof(run_oofs, args.mean)
    if oof_labels is not None:
        _print_oof(run_oofs, oof_labels, oof_probs, cal, log)
        if args.calibrate != "none":
            calibration.update(cal.fit_calibration(oof_labels, oof_probs, args.calibrate, groups=oof_folds))
            if calibration["applied"]:
                log(f"calibration ({args.calibrate}): temperature {calibration['temperature']:.3f}, floor "
                    f"{calibration['floor']:.4f}; OOF log loss {calibration['before']:.4f} -> "
                    f"{calibration['after']:.4f}; {calibration['held_out']:.4f} on held-out "
                    f"{calibration['held_out_by']}")
            else:
                fitted = calibration["rejected"]
                log(f"calibration ({args.calibrate}): not applied. Fitted on all OOF rows (temperature "
                    f"{fitted['temperature']:.3f}, floor {fitted['floor']:.4f}) it lowers their log loss "
                    f"{calibration['before']:.4f} -> {fitted['after']:.4f}, but fitted without each of the "
                    f"{calibration['held_out_by']} in turn it gives them {calibration['held_out']:.4f}: it "
                    f"fits noise")
    elif args.calibrate != "none":
        log("no out-of-fold predictions found: not calibrating")
    probs = cal.calibrate(probs, calibration["temperature"], calibration["floor"])
    if args.clip:
        probs = cal.apply_floor(probs, args.clip)
        calibration["clip"] = args.clip
        if oof_labels is not None:  # show what the manual floor does, as for a fitted one
            unclipped = cal.calibrate(oof_probs, calibration["temperature"], calibration["floor"])
            before = cal.kaggle_log_loss(oof_labels, unclipped)
            after = cal.kaggle_log_loss(oof_labels, cal.apply_floor(unclipped, args.clip))
            log(f"clip {args.clip:g}: OOF log loss {before:.4f} -> {after:.4f}")
    if fill_rows:
        priors = _priors(run_oofs)
        probs[fill_rows] = priors
        log(f"{len(fill_rows)} unreadable test image(s) given the class priors: "
            + ", ".join(test.id.iloc[i] for i in fill_rows))

    sample = read_sample_submission(data_dir, args.stage)
    sample_ids = list(sample.image) if sample is not None else list(test.id)
    written = write_submission(build_submission(list(test.id), probs), out, sample_ids, force=args.force)
    atomic_write_text(runs[0] / "calibration.json", json.dumps(
        calibration | {"runs": [str(r) for r in runs], "tta": len(views), "stage": args.stage}, indent=2) + "\n")
    checked = ("validated" if sample is not None else
               "its form checked, but not its ids: no sample submission to check them against")
    log(f"wrote {written} ({len(test)} rows, {len(runs)} run(s) x folds x {len(views)} views, {checked})")
    try:
        from ncfm import report

        report.build_report(runs)
    except Exception as e:  # the submission is written; a report problem must not fail the command
        log(f"report skipped ({type(e).__name__}: {e})")
    return 0


def _ensemble_oof(run_oofs: list[list[dict]], mean: str):
    """Pool each run's OOF (folds concatenated), average runs over their common images.
    Returns (labels, probs, fold of each row in the first run), or three Nones."""
    frames = []
    for oofs in run_oofs:
        if not oofs:
            return None, None, None
        df = pd.concat([_frame(o["image"], o["probs"]).assign(label=o["label"], fold=o["fold"]) for o in oofs])
        frames.append(df.drop_duplicates("image").set_index("image").sort_index())
    common = frames[0].index
    for f in frames[1:]:
        common = common.intersection(f.index)
    if len(common) == 0:
        return None, None, None
    probs = average([f.loc[common, list(CLASSES)].to_numpy() for f in frames], mean)
    labels = frames[0].loc[common, "label"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    return labels, probs, frames[0].loc[common, "fold"].to_numpy()


def _print_oof(run_oofs, labels, probs, cal, log) -> None:
    index = {c: i for i, c in enumerate(CLASSES)}
    for run_i, oofs in enumerate(run_oofs):
        for o in oofs:
            y = np.array([index[c] for c in o["label"]])
            log(f"  run {run_i} {o['fold']}: OOF log loss {cal.kaggle_log_loss(y, o['probs']):.4f} "
                f"({len(y)} images)")
    log(f"OOF log loss, all folds{' and runs' if len(run_oofs) > 1 else ''}: "
        f"{cal.kaggle_log_loss(labels, probs):.4f} ({len(labels)} images)")


def _priors(run_oofs) -> np.ndarray:
    labels = [c for oofs in run_oofs for o in oofs for c in o["label"]]
    counts = pd.Series(labels).value_counts().reindex(list(CLASSES), fill_value=0).to_numpy("float64")
    counts = counts + 1.0  # never a zero probability
    return counts / counts.sum()
