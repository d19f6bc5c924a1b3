"""The run folder: its layout, and the only code that spells or parses its files.

    runs/NAME/
      fold<K>/                    one trained fold (`ncfm train --fold K`)
        config.json               resolved settings, the competition's classes, the split
        state.json                progress: epoch, best epoch and val_loss, patience, finished, why it stopped
                                  (stop_reason), OOF score and that of the class priors (prior_log_loss,
                                  no_better_than_priors)
        history.csv               one row per epoch over both phases
        best.keras                the inference model with the lowest val_loss (uint8 pixels in, class
                                  probabilities out, Keras' own layers only), its class names inside
        last.keras                the training model and optimizer after the last saved epoch, with
                                  the fold's state and history at that epoch inside: resume's commit point
        oof.csv                   held-out predictions of best.keras: image,label,<one column per class>
        oof_tta<N>.csv (+ .json)  the same under N test-time views (written by predict)
        train.log, logs/          the console's milestones; TensorBoard
      predictions/stage<S>_fold<K>_tta<N>.csv (+ .json)   per-fold test predictions (predict)
      calibration.json            the calibration predict fitted and applied (and the folds it left out)
      report.html, *.png          the report
      .fold<K>.lock               held while a process trains fold K
      .fold<K>.replaced/          a fold set aside by --retrain until the new one has a checkpoint

Many members from one command (`ncfm train --folds all --seeds 0,1 --config a.toml --config b.toml`,
ncfm.members): each (config, seed) is a run of its own, its folds laid out as above, and the run
above them holds what the command and predict wrote about all of them:

    runs/NAME/
      <config>-seed<S>/           one member group: --config <config>.toml (default: no file) and seed S
        fold<K>/ ...              as above; the same files, the same commands work on it
        fold<K>.console.log       the member process's output, every attempt appended (on Ray)
      members.csv                 the last `ncfm train --folds` command's table: member, config, seed,
                                  fold, status, attempts, oof_log_loss, seconds, node, devices, started, ended
      calibration.json, report.html, predictions of the ensemble as above (predict --run runs/NAME)

Without --seeds and with at most one --config, `--folds` trains today's runs/NAME/fold<K>/.

A detector run (`ncfm detect --fold K`) has the same folds and files (config.json says
"kind": "detector"; its models are RetinaNets), and in place of oof.csv:
      fold<K>/oof_boxes.csv       boxes found on the fold's held-out training images:
                                  image,rank,score,x,y,width,height (original pixels, rank 0 best)
      fold<K>/boxes_stage<S>.csv  the same for a stage's test images (image = the file, relative to the data folder)

Every reader checks what it reads: a truncated checkpoint, a damaged JSON or a broken CSV is an
NcfmError naming the file and what to do, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import NcfmError
from ncfm.fileio import atomic_write_text, fsync_dir, fsync_file

HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
DETECT_HISTORY_COLUMNS = ["epoch", "loss", "val_loss", "learning_rate", "seconds"]
FOUND_BOX_COLUMNS = ["image", "rank", "score", "x", "y", "width", "height"]
CLASSIFIER = "classifier"  # config.json "kind" of a classifier fold (folds before 2026-12-05 have no "kind")
DETECTOR = "detector"  # config.json "kind" of a detector fold
RECORD = "ncfm/record.json"  # inside a .keras file: the fold's progress when it was saved
FOLD_NAME = re.compile(r"fold(\d+)")


@dataclass(frozen=True)
class Fold:
    """The files of one fold of a run."""

    run: Path
    index: int

    @property
    def dir(self) -> Path:
        return self.run / f"fold{self.index}"

    @property
    def name(self) -> str:
        return self.dir.name

    config = property(lambda self: self.dir / "config.json")
    state = property(lambda self: self.dir / "state.json")
    history = property(lambda self: self.dir / "history.csv")
    best = property(lambda self: self.dir / "best.keras")
    last = property(lambda self: self.dir / "last.keras")
    oof = property(lambda self: self.dir / "oof.csv")
    log = property(lambda self: self.dir / "train.log")
    logs = property(lambda self: self.dir / "logs")
    lock = property(lambda self: self.run / f".fold{self.index}.lock")
    set_aside = property(lambda self: self.run / f".fold{self.index}.replaced")

    oof_boxes = property(lambda self: self.dir / "oof_boxes.csv")
    # beside fold<K>/, not in it: --retrain sets fold<K>/ aside while the process writes this
    console = property(lambda self: self.run / f"fold{self.index}.console.log")

    def test_boxes(self, stage: int | None) -> Path:
        return self.dir / f"boxes_stage{stage if stage is not None else 1}.csv"

    def oof_views(self, n_views: int) -> Path:
        return self.dir / f"oof_tta{n_views}.csv"

    def retrain_hint(self) -> str:
        return f"`ncfm train --fold {self.index} --run {self.run} --retrain`"


def inference_files(fold: Fold, n_views: int) -> list[Path]:
    """The files of a fold that predict reads, those there (config.json aside): the model, its state,
    its OOF (under n_views views too, with the record beside) or, for a detector, its OOF boxes.
    What a copy of the run needs to predict elsewhere (ncfm.notebook)."""
    views = fold.oof_views(n_views)
    wanted = [fold.best, fold.state, fold.oof, views, views.with_suffix(".json"), fold.oof_boxes]
    return [path for path in wanted if path.is_file()]


def fold_of(run_dir: os.PathLike | str, index: int) -> Fold:
    return Fold(Path(run_dir), int(index))


def trained_folds(run_dir: os.PathLike | str) -> list[Fold]:
    """The folds of a run that have a best.keras, in fold order (fold0.bak/ and the like are not folds)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [Fold(run_dir, int(m.group(1))) for p in run_dir.iterdir()
             if (m := FOLD_NAME.fullmatch(p.name)) and p.is_dir()]
    return sorted((f for f in found if f.best.is_file()), key=lambda f: f.index)


def all_folds(run_dir: os.PathLike | str) -> list[Fold]:
    """Every fold<K>/ folder of a run, trained or not, in fold order."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted((Fold(run_dir, int(m.group(1))) for p in run_dir.iterdir()
                   if (m := FOLD_NAME.fullmatch(p.name)) and p.is_dir()), key=lambda f: f.index)


def predictions_path(run_dir: os.PathLike | str, stage: int, fold: Fold, n_views: int) -> Path:
    return Path(run_dir) / "predictions" / f"stage{stage}_{fold.name}_tta{n_views}.csv"


def calibration_path(run_dir: os.PathLike | str) -> Path:
    return Path(run_dir) / "calibration.json"


# ----------------------------------------------------------------------------- members
MEMBER_NAME = re.compile(r"(.+)-seed(-?\d+)")
DEFAULT_CONFIG = "default"  # a member group's name when no --config file was given


def member_run(run_dir: os.PathLike | str, config: str, seed: int) -> Path:
    """The run folder of one (config, seed) member group: runs/NAME/<config>-seed<S>/."""
    return Path(run_dir) / f"{config}-seed{int(seed)}"


def member_of(run_dir: os.PathLike | str) -> tuple[str, int] | None:
    """(config, seed) when a folder is named as a member group, else None."""
    m = MEMBER_NAME.fullmatch(Path(run_dir).name)
    return (m.group(1), int(m.group(2))) if m else None


def member_runs(run_dir: os.PathLike | str) -> list[Path]:
    """The runs whose folds are the members of a run: the run itself when it holds fold<K>/
    folders (or is no run at all, for the caller's own error), else its <config>-seed<S>/
    groups, by config then seed."""
    run_dir = Path(run_dir)
    groups = sorted((p for p in run_dir.iterdir() if p.is_dir() and member_of(p) and all_folds(p)),
                    key=lambda p: member_of(p)) if run_dir.is_dir() else []
    if all_folds(run_dir) and groups:
        raise NcfmError(f"{run_dir}: holds both fold<K>/ folders and member groups ({groups[0].name}/...); "
                        f"move one of them to a run of its own (e.g. runs/NAME-members) and pass each as --run")
    return groups or [run_dir]


def members_table_path(run_dir: os.PathLike | str) -> Path:
    return Path(run_dir) / "members.csv"


def write_members_table(run_dir: os.PathLike | str, table: pd.DataFrame) -> None:
    atomic_write_text(members_table_path(run_dir), table.to_csv(index=False, float_format="%.6g"))


def read_members_table(run_dir: os.PathLike | str) -> pd.DataFrame | None:
    path = members_table_path(run_dir)
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype={"member": str, "config": str, "status": str, "devices": str},
                           keep_default_na=False)
    except Exception as e:  # pandas raises many types for unreadable CSVs
        raise NcfmError(f"{path}: damaged ({type(e).__name__}); rerun the `ncfm train --folds` command "
                        f"to write it again") from None


def visibility_marker(folder: os.PathLike | str, token: str) -> Path:
    """A file the driver of `ncfm train --folds` writes into a folder (the run's, the cache's)
    for a node of a cluster to read back: that node sees the same folder. Deleted after."""
    return Path(folder) / f".ncfm-visible-{token}"


# ----------------------------------------------------------------------------- JSON files
def _read_json(path: Path, fix: str) -> dict | None:
    """A JSON object from `path`, None when absent; damaged -> NcfmError naming the file and `fix`."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise NcfmError(f"{path}: damaged ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(data, dict):
        raise NcfmError(f"{path}: damaged (not a JSON object); {fix}")
    return data


def _fold_fix(fold: Fold) -> str:
    return f"retrain that fold ({fold.retrain_hint()}) or move {fold.dir} out of the run to leave it out"


def read_config(fold: Fold) -> dict | None:
    """The settings a fold was trained with (config.json), None when it has none."""
    return _read_json(fold.config, _fold_fix(fold))


def write_config(fold: Fold, config: dict) -> None:
    atomic_write_text(fold.config, json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_state(fold: Fold) -> dict | None:
    return _read_json(fold.state, _fold_fix(fold))


def write_state(fold: Fold, state: dict) -> None:
    atomic_write_text(fold.state, json.dumps(state, indent=2) + "\n")


def is_finished(fold: Fold) -> bool:
    """Training has ended (a fold without state.json, a model copied in from elsewhere, counts as finished)."""
    state = read_state(fold)
    return True if state is None else bool(state.get("finished", False))


def read_calibration(run_dir: os.PathLike | str) -> dict | None:
    return _read_json(calibration_path(run_dir), "run `ncfm predict` again to fit it anew")


def write_calibration(run_dir: os.PathLike | str, calibration: dict) -> None:
    atomic_write_text(calibration_path(run_dir), json.dumps(calibration, indent=2) + "\n")


# ----------------------------------------------------------------------------- progress
def new_state() -> dict:
    return dict(epoch=0, phase=1, best_epoch=0, best_val_loss=float("inf"), wait=0, finished=False)


def read_progress(fold: Fold) -> tuple[dict, list[dict]]:
    """Where a fold's training stands: (state, history rows).

    A finished fold: its state.json. Otherwise the record inside last.keras, the commit point
    (state.json may lag it if the process died in between), improved by best.keras' record
    when that file was renamed into place just before the process died. No checkpoint: a
    fresh start.
    """
    state = read_state(fold)
    if state is not None and state.get("finished") and fold.oof.is_file():
        return state, []
    record = read_record(fold.last) if fold.last.is_file() else None
    if record is None:
        if fold.last.is_file():
            raise NcfmError(f"{fold.last}: damaged or not written by ncfm (no progress record inside); "
                            f"{fold.retrain_hint()} starts the fold again")
        return new_state(), []
    state, history = dict(record["state"], finished=False), record["history"]
    best = read_record(fold.best) if fold.best.is_file() else None
    if best and best.get("best_val_loss", np.inf) < state["best_val_loss"]:
        state.update(best_epoch=best["best_epoch"], best_val_loss=best["best_val_loss"], wait=0)
    return state, history


# ----------------------------------------------------------------------------- history
def write_history(fold: Fold, rows: list[dict], columns=HISTORY_COLUMNS) -> None:
    atomic_write_text(fold.history, pd.DataFrame(rows, columns=columns).to_csv(index=False))


def read_history(fold: Fold) -> pd.DataFrame | None:
    """history.csv, None when absent; a broken one is an NcfmError."""
    if not fold.history.is_file():
        return None
    try:
        df = pd.read_csv(fold.history)
    except Exception as e:  # pandas raises many types for unreadable CSVs
        raise NcfmError(f"{fold.history}: damaged ({type(e).__name__}); {_fold_fix(fold)}") from None
    missing = [c for c in ("epoch", "loss", "val_loss") if c not in df.columns]
    if missing:
        raise NcfmError(f"{fold.history}: missing column(s) {', '.join(missing)}; {_fold_fix(fold)}")
    return df


# ----------------------------------------------------------------------------- checkpoints
def save_model(model, path: Path, record: dict | None = None, classes=None) -> None:
    """model.save to a temp file, add ncfm's entries, fsync, rename: a crash never breaks `path`.

    `record` (the fold's progress) is stored inside the zip as RECORD, and `classes` as the
    model's own description (ncfm.model.write_model_info); Keras ignores both when loading, so
    the file says which epoch it holds even if the process dies before state.json catches up."""
    from ncfm.model import write_model_info

    tmp = path.with_name(f".tmp-{path.name}")
    try:
        model.save(tmp)
        if record is not None:
            with zipfile.ZipFile(tmp, "a") as z:
                z.writestr(RECORD, json.dumps(record))
        if classes is not None:
            write_model_info(tmp, model, classes)
        fsync_file(tmp)
        tmp.replace(path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _zip_entry(path: Path, name: str) -> dict | None:
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(name))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def read_record(path: Path) -> dict | None:
    """The progress saved inside a checkpoint, or None (absent, unreadable)."""
    return _zip_entry(path, RECORD)


def read_model_info(path: Path) -> dict | None:
    """What best.keras says of itself ({"classes": [...], "image_size": S, "backbone": name},
    see ncfm.model.write_model_info), or None (absent, unreadable)."""
    from ncfm.model import MODEL_INFO

    return _zip_entry(path, MODEL_INFO)


def fold_classes(fold: Fold, config: dict | None = None) -> tuple[str, ...] | None:
    """The classes a fold was trained for, in the order of its outputs: its config.json (or `config`,
    when the caller has read it already, {} for a damaged one), else what its best.keras says; None
    when neither records them (a model from before classes were recorded)."""
    config = (read_config(fold) or {}) if config is None else config
    classes = config.get("classes") or (read_model_info(fold.best) or {}).get("classes")
    return tuple(str(c) for c in classes) if isinstance(classes, (list, tuple)) and classes else None


def fold_image_size(fold: Fold) -> int:
    """The input size a fold's model takes: its config.json, else what its best.keras says."""
    size = (read_config(fold) or {}).get("image_size") or (read_model_info(fold.best) or {}).get("image_size")
    if not size:
        raise NcfmError(f"{fold.dir}: neither config.json nor best.keras records the image size; "
                        f"retrain that fold ({fold.retrain_hint()})")
    return int(size)


def check_checkpoint(path: Path, fix: str) -> None:
    """A .keras file that Keras could load: a whole zip holding the model's config and weights."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise NcfmError(f"{path}: truncated or not a Keras model file ({e}); {fix}") from None
    if bad is not None or not {"config.json", "model.weights.h5"} <= names:
        raise NcfmError(f"{path}: damaged ({'bad data in ' + bad if bad else 'no model inside'}); {fix}")


def load_model(path: Path, fix: str, compile: bool = True):
    """keras.saving.load_model with a checked file: a damaged one is an NcfmError saying `fix`."""
    import keras

    check_checkpoint(path, fix)
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as e:  # h5py/Keras raise many types for a damaged file
        raise NcfmError(f"{path}: cannot be loaded ({type(e).__name__}: {e}); {fix}") from None


def load_best(fold: Fold):
    return load_model(fold.best, _fold_fix(fold), compile=False)


def load_last(fold: Fold):
    return load_model(fold.last, f"{fold.retrain_hint()} starts the fold again")


# ----------------------------------------------------------------------------- predictions
def write_oof(fold: Fold, images, labels, probs: np.ndarray, classes) -> None:
    """oof.csv: image, label, then one probability column per class."""
    out = probability_frame(images, probs, classes)
    out.insert(1, "label", list(labels))
    atomic_write_text(fold.oof, out.to_csv(index=False, float_format="%.8f"))


def probability_frame(ids, probs, classes, id_column: str = "image") -> pd.DataFrame:
    df = pd.DataFrame(np.asarray(probs, dtype="float64"), columns=list(classes))
    df.insert(0, id_column, list(ids))
    return df


def read_oof(path: Path, classes, fix: str = "", one_class: bool = True) -> pd.DataFrame:
    """An OOF file (oof.csv or oof_tta<N>.csv) checked: image, label (one of `classes`) and a
    finite probability column per class. Adds `y`, the label's index in `classes`. With
    one_class=False (several labels, a number, a grade: ncfm.task) the label is kept as it is and
    each output must lie in [0, 1]; no `y`."""
    fix = fix or "retrain that fold, or move its folder out of the run to leave it out"
    try:
        df = pd.read_csv(path, dtype={"image": str, "label": str}, keep_default_na=False)
    except Exception as e:  # pandas raises many types for unreadable CSVs
        raise NcfmError(f"{path}: damaged ({type(e).__name__}: {e}); {fix}") from None
    missing = [c for c in ("image", "label", *classes) if c not in df.columns]
    if missing:
        raise NcfmError(f"{path}: missing column(s) {', '.join(missing[:5])}; expected image,label,"
                        f"{','.join(classes[:5])}{',...' if len(classes) > 5 else ''}; {fix}")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(df.label) - set(index)) if one_class else []
    if unknown:
        raise NcfmError(f"{path}: unknown label(s) {unknown[:5]}; labels must be among the competition's "
                        f"classes; {fix}")
    probs = pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce") for c in classes}).to_numpy("float64")
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1)
    bad |= (probs.sum(axis=1) <= 0) if one_class else (probs > 1).any(axis=1)
    if len(df) == 0 or bad.any():
        what = "no rows" if len(df) == 0 else (f"{int(bad.sum())} row(s) with empty, non-numeric, negative or "
                                               f"{'all-zero' if one_class else 'above 1'} probabilities (first: "
                                               f"{df.image.iloc[int(np.argmax(bad))]})")
        raise NcfmError(f"{path}: {what}; {fix}")
    out = pd.DataFrame(probs, columns=list(classes))
    out.insert(0, "label", df.label.to_numpy())
    out.insert(0, "image", df.image.to_numpy())
    if one_class:
        out["y"] = df.label.map(index).astype(int).to_numpy()
    return out


def write_predictions(path: Path, df: pd.DataFrame, key: dict, unreadable=()) -> None:
    """Per-fold predictions, and beside them (.json) what they depend on and which rows were left
    blank because their image could not be read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, df.to_csv(index=False, float_format="%.8f"))
    record = key | {"unreadable": sorted(int(i) for i in unreadable)}
    atomic_write_text(path.with_suffix(".json"), json.dumps(record) + "\n")


def read_predictions(path: Path, ids, classes, key: dict) -> np.ndarray | None:
    """Saved predictions for exactly these ids (in this order) made with the same `key` (the .json
    beside the file), or None when stale, absent or unreadable (they are then made again). Blank
    (NaN) rows must be exactly the unreadable images the .json records."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.with_suffix(".json").read_text())
        unreadable = record.pop("unreadable", None)
        if record != key or unreadable is None:
            return None
        df = pd.read_csv(path, dtype={0: str}, keep_default_na=True)
    except (OSError, ValueError, AttributeError, pd.errors.ParserError):
        return None
    if list(df.iloc[:, 0].astype(str)) != [str(i) for i in ids] or [c for c in df.columns if c in classes] != list(classes):
        return None
    probs = df[list(classes)].to_numpy("float64", copy=True)  # one column comes back read-only otherwise
    if np.flatnonzero(np.isnan(probs).any(axis=1)).tolist() != sorted(unreadable):
        return None
    return probs


@dataclass(frozen=True)
class Family:
    """One model family: what differs between families is a field here, looked up by the fold's kind
    (config.json "kind"), never an `if kind == ...` elsewhere. A new family (a segmenter, say) is one
    module on ncfm.fold (its config dataclass, its FoldCheckpoint, its command) and one row of FAMILIES."""

    kind: str
    title: str           # progress lines name its folds so: "fold 3", "detector fold 3"
    predicted: bool      # `ncfm predict` takes its runs (a detector's boxes reach it through a crop run)
    report: str          # "module:function" that loads a run of it for the report (its section)


FAMILIES = {
    CLASSIFIER: Family(CLASSIFIER, "fold", True, "ncfm.report:load_run"),
    DETECTOR: Family(DETECTOR, "detector fold", False, "ncfm.report_detect:load_detector_run"),
}


def kind_of(config: dict) -> str:
    """A fold's family, from its config.json: CLASSIFIER or DETECTOR."""
    return config.get("kind") or CLASSIFIER


def family(kind: str) -> Family:
    if kind not in FAMILIES:
        raise NcfmError(f"received kind={kind!r} in a fold's config.json; this ncfm knows {', '.join(FAMILIES)}: "
                        f"a newer ncfm wrote it, or the file was edited")
    return FAMILIES[kind]


def fold_title(kind: str) -> str:
    """How progress lines name a fold of this family: 'fold', 'detector fold'."""
    return family(kind).title


def run_kind(run_dir: os.PathLike | str) -> str | None:
    """The family of a run's folds (the first config.json that says), None for a run without one."""
    for fold in all_folds(run_dir):
        config = read_config(fold)
        if config is not None:
            return kind_of(config)
    return None


def is_detector(run_dir: os.PathLike | str) -> bool:
    """Whether a run's folds are detector folds (their config.json says so)."""
    return run_kind(run_dir) == DETECTOR


def write_found_boxes(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, df[FOUND_BOX_COLUMNS].to_csv(index=False, float_format="%.6g"))


def read_found_boxes(path: Path) -> pd.DataFrame:
    """A detector fold's found boxes, checked: every column there, ranks and scores numbers."""
    fix = "rerun `ncfm detect` for that fold (with --retrain if its model is damaged too)"
    try:
        df = pd.read_csv(path, dtype={"image": str}, keep_default_na=True)
    except FileNotFoundError:
        raise NcfmError(f"{path}: not found; {fix}") from None
    except Exception as e:  # pandas raises many types for unreadable CSVs
        raise NcfmError(f"{path}: damaged ({type(e).__name__}: {e}); {fix}") from None
    missing = [c for c in FOUND_BOX_COLUMNS if c not in df.columns]
    if missing:
        raise NcfmError(f"{path}: missing column(s) {', '.join(missing)}; {fix}")
    numeric = df[FOUND_BOX_COLUMNS[1:]].apply(pd.to_numeric, errors="coerce")
    if numeric[["rank", "score"]].isna().any(axis=None) or df.image.isna().any():
        raise NcfmError(f"{path}: rows without an image, rank or score; {fix}")
    df[FOUND_BOX_COLUMNS[1:]] = numeric
    df["rank"] = df["rank"].astype(int)
    return df


# ----------------------------------------------------------------------------- one process per fold
@contextlib.contextmanager
def fold_lock(fold: Fold):
    """An exclusive lock on run/.fold<K>.lock while a process trains fold K. Two processes
    writing one fold's checkpoints would leave a fold that cannot resume."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform (Windows): one process per fold
        yield
        return
    fold.run.mkdir(parents=True, exist_ok=True)
    with open(fold.lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "by another process"
            raise NcfmError(f"{fold.dir}: already being trained ({holder}); wait for that run to end, "
                            f"or stop it, then rerun this command") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def replacing(fold: Fold, retrain: bool):
    """--retrain: the old fold is set aside, not deleted, until the new one has its first
    checkpoint; if anything fails before that (an unreadable image, a missing weights file,
    Ctrl-C), the old fold is put back as it was. Also finishes what a killed retrain left."""
    _put_back_unless_checkpointed(fold)
    if fold.set_aside.exists():  # the new fold had its first checkpoint: the old one is done with
        shutil.rmtree(fold.set_aside)
    if retrain and fold.dir.exists():
        fold.dir.rename(fold.set_aside)
    try:
        yield
    except BaseException:
        _put_back_unless_checkpointed(fold)
        raise
    finally:
        if fold.set_aside.exists():
            shutil.rmtree(fold.set_aside, ignore_errors=True)


def _put_back_unless_checkpointed(fold: Fold) -> None:
    if fold.set_aside.exists() and not fold.last.is_file():
        shutil.rmtree(fold.dir, ignore_errors=True)
        fold.set_aside.rename(fold.dir)
