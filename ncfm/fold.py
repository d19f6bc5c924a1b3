"""What every fold shares, whatever its family (a classifier in ncfm.train, a detector in
ncfm.detect): the split it was trained on, the one rule for resuming it, its progress lines, and
the per-epoch bookkeeping (history, best on val_loss, early stopping, atomic checkpoints).

A family's fold runs as: open_fold (read progress; refuse what cannot resume; a finished fold says
so and is returned as it is) -> under to_fold_log(fold): write its config, fit with a
FoldCheckpoint subclass, score its held-out images. Each family's config dataclass lists the
fields that may change between an interrupted run and its resumption (EXECUTION: workers,
patience, ...); every other field must match the fold's config.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from ncfm import NcfmError, progress, runs
from ncfm.progress import say


def checked(resolve, *values):
    """resolve(*values), its ValueError turned into the NcfmError a user sees."""
    try:
        return resolve(*values)
    except ValueError as e:
        raise NcfmError(str(e)) from None


def split_digest(manifest: pd.DataFrame, max_train_images: int = 0) -> str:
    """What a fold's training and validation sets depend on: every image, label and fold."""
    text = manifest[["image", "label", "fold"]].to_csv(index=False) + f"max_train_images={max_train_images}\n"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def precision_hint(saved: dict, precision: str) -> str:
    """The flag that resumes a fold in the precision it started with, when `auto` chose another
    here (a fold started on a T4 in float16, resumed on an A100), else ''."""
    started = saved.get("mixed_precision")
    if started in (None, precision):
        return ""
    flag = {"float32": "off", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(started, started)
    return f" (--mixed-precision {flag} resumes it in the precision it started with)"


def changed_settings(saved: dict, cfg) -> list[str]:
    """Settings that differ from those the fold was started with ('lr: 0.001 -> 0.01'); the config's
    EXECUTION fields may change, and a field the saved config predates is not counted."""
    return [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in dataclasses.asdict(cfg).items()
            if k not in type(cfg).EXECUTION and k in saved and saved[k] != v]


def check_resumable(saved: dict | None, cfg, split: str, folds_csv: Path, fold: runs.Fold) -> None:
    """Going on with a fold that was started needs the settings and the split it was started with."""
    if saved is None:
        raise NcfmError(f"{fold.config}: missing beside {fold.last}, so the settings it was started with are "
                        f"unknown; {fold.retrain_hint()} starts the fold again")
    changed = changed_settings(saved, cfg)
    if changed:
        raise NcfmError(f"{fold.dir} was started with other settings ({'; '.join(changed)}); resume with the "
                        f"same settings{precision_hint(saved, cfg.mixed_precision)}, pass --retrain to start "
                        f"over, or use a new --run")
    if saved.get("split", split) != split:
        raise NcfmError(f"{folds_csv} is not the split {fold.dir} started with (its images, labels or folds "
                        f"changed, or --max-train-images did): resuming would validate on images the model "
                        f"trained on. Put the old manifest back, pass --retrain to start over, or use a new --run")


def open_fold(fold: runs.Fold, cfg, kind: str, split: str, folds_csv: Path) -> tuple[dict, list]:
    """A fold's (state, history) before training it: refuses a fold of another family and a resume
    with other settings or another split; a finished fold says so (its state["finished"] is then
    true and the caller returns it). Nothing is written."""
    state, history = runs.read_progress(fold)
    saved = runs.read_config(fold)
    if saved is not None and runs.kind_of(saved) != kind:
        raise NcfmError(f"{fold.dir}: a {runs.kind_of(saved)} fold, not a {kind}; pass another --run")
    if state["finished"]:
        changed = changed_settings(saved or {}, cfg)
        other = f" with other settings ({'; '.join(changed)})" if changed else ""
        with to_fold_log(fold):
            say(f"{runs.fold_title(kind)} {fold.index} already trained{other} (best epoch {state['best_epoch']}, "
                f"val_loss {state['best_val_loss']:.4f}); pass --retrain to train it again"
                f"{' with these' if changed else ''}")
    elif state["epoch"] > 0 or saved is not None:
        check_resumable(saved, cfg, split, folds_csv, fold)
    return state, history


def to_fold_log(fold: runs.Fold):
    """Progress lines also go to the fold's train.log while the block runs (the folder is made)."""
    fold.dir.mkdir(parents=True, exist_ok=True)
    return progress.to_file(fold.log)


def resuming_line(state: dict) -> str:
    return f"resuming after epoch {state['epoch']} (best {state['best_epoch']}, val_loss {state['best_val_loss']:.4f})"


# ----------------------------------------------------------------------------- per epoch
class FoldCheckpoint(keras.callbacks.Callback):
    """Per epoch: a history row, the best weights on val_loss, early stopping, a raise on NaN.
    Checkpoints are flushed to disk at most every `checkpoint_seconds` and at the end of each
    fit: best.keras (if a better epoch came since), then last.keras, the commit point resume
    trusts (it carries its epoch's state and history), then history.csv and state.json. On a GPU
    an epoch of NCFM takes about as long as saving InceptionV3 with its optimizer, so saving every
    epoch would nearly double a fold's time (docs/raw/h100-2026-11-22/full_job.log).

    A family subclasses it with its history row, progress line, when patience counts, and how
    best.keras is saved."""

    history_columns: list = []
    lr_flags = "--lr"

    def __init__(self, fold: runs.Fold, state: dict, history: list, cfg):
        super().__init__()
        self.fold, self.state, self.history, self.cfg = fold, state, history, cfg
        self.phase = 1

    def history_row(self, epoch: int, logs: dict, seconds: float) -> dict:
        raise NotImplementedError

    def progress_line(self, row: dict) -> str:
        raise NotImplementedError

    def counts_patience(self, epoch: int) -> bool:
        return True

    def save_best(self, record: dict) -> None:
        raise NotImplementedError

    def on_train_begin(self, logs=None):
        self.flushed_at, self.flushed_epoch = time.time(), self.state["epoch"]
        self.best_weights = None  # host copy of the best epoch not yet written to disk
        self.trained_weights = None  # the trained weights while the averaged ones are validated (--ema)

    def on_test_begin(self, logs=None):
        """With an average of the weights (the optimizer's EMA, --ema), the epoch is validated, kept as
        best.keras and judged for early stopping on the averaged weights: they stand in for the trained
        ones from validation until the epoch's bookkeeping is done (on_epoch_end puts them back)."""
        if self.trained_weights is None and uses_ema(getattr(self.model, "optimizer", None)):
            self.trained_weights = [keras.ops.convert_to_numpy(w) for w in self.model.trainable_weights]
            self.model.optimizer.finalize_variable_values(self.model.trainable_weights)
            for w in self.model.trainable_weights:  # a copy: on JAX the weights would share the average's
                w.assign(keras.ops.convert_to_numpy(w))  # buffers, which evaluation donates and deletes

    def put_trained_weights_back(self):
        if self.trained_weights is not None:
            for w, value in zip(self.model.trainable_weights, self.trained_weights):
                w.assign(value)
            self.trained_weights = None

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()
        self.lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))  # the epoch's first step
        reseed_random_layers(self.model, epoch)

    def on_epoch_end(self, epoch, logs=None):
        logs, state, phase = dict(logs or {}), self.state, self.phase
        row = self.history_row(epoch, logs, time.time() - self.started)
        loss, val_loss = row["loss"], row["val_loss"]
        if not (np.isfinite(loss) and np.isfinite(val_loss)):
            raise FloatingPointError(
                f"epoch {epoch + 1}: loss={loss}, val_loss={val_loss}; stopped. The last saved epoch is "
                f"kept in {self.fold.last}: lower the learning rate ({self.lr_flags}) and rerun the same "
                f"command to resume from it")
        self.history.append(row)
        improved = val_loss < state["best_val_loss"]
        if improved:
            self.best_weights = [np.array(keras.ops.convert_to_numpy(w)) for w in self.model.weights]
            state.update(best_val_loss=val_loss, best_epoch=epoch + 1, wait=0)
        elif self.counts_patience(epoch) and epoch + 1 > state["best_epoch"]:
            # (epochs replayed after a resume that adopted a later best.keras do not count)
            state["wait"] += 1
        state.update(epoch=epoch + 1, phase=phase)
        say(self.progress_line(row) + ("  *best" if improved else ""))
        self.put_trained_weights_back()
        if self.counts_patience(epoch) and self.cfg.patience and state["wait"] >= self.cfg.patience:
            state["stopped_early"] = True
            state["stop_reason"] = (f"early stopping after epoch {epoch + 1}: val_loss has not improved on epoch "
                                    f"{state['best_epoch']}'s for {self.cfg.patience} epochs (--patience)")
            say(state["stop_reason"])
            self.model.stop_training = True
        # With EMA the phase's last epoch is saved by on_train_end, once fit has put the averaged
        # weights in place: the next phase starts from them, resumed or not.
        ema_phase_end = uses_ema(getattr(self.model, "optimizer", None)) and (
            self.model.stop_training or epoch + 1 >= (self.params or {}).get("epochs", np.inf))
        if time.time() - self.flushed_at >= self.cfg.checkpoint_seconds and not ema_phase_end:
            self.flush()

    def on_train_end(self, logs=None):
        if self.history and self.history[-1]["epoch"] == self.state["epoch"] != self.flushed_epoch:
            self.flush()

    def flush(self):
        if self.best_weights is not None:  # set the best weights, save, put the current ones back
            current = self.model.get_weights()
            self.model.set_weights(self.best_weights)
            self.save_best({"best_epoch": self.state["best_epoch"], "best_val_loss": self.state["best_val_loss"]})
            self.model.set_weights(current)
            self.best_weights = None
        runs.save_model(self.model, self.fold.last, {"state": self.state, "history": self.history})
        runs.write_history(self.fold, self.history, self.history_columns)
        runs.write_state(self.fold, self.state)
        self.flushed_at, self.flushed_epoch = time.time(), self.state["epoch"]


def uses_ema(optimizer) -> bool:
    """Whether `optimizer` (or the one a LossScaleOptimizer wraps) keeps an average of the weights."""
    return bool(getattr(getattr(optimizer, "inner_optimizer", optimizer), "use_ema", False))


SEED_STRIDE = 2**20  # random draws one epoch may make before its stream meets the next epoch's


def reseed_random_layers(model, epoch: int) -> None:
    """Start every random stream of the model (augmentation, dropout) at a point fixed by the epoch.

    A SeedGenerator's state (seed, counter) is a variable that model.save does not store, so a
    model loaded from last.keras restarts every counter at 0 and a resumed run would replay
    epoch 1's augmentations and dropout masks. Setting the counter to epoch * SEED_STRIDE at the
    start of each epoch makes what an epoch draws depend only on the seed and the epoch number.
    """
    for v in model.variables:
        if v.name == "seed_generator_state":
            seed = int(np.asarray(v.numpy())[0])
            v.assign(np.array([seed, epoch * SEED_STRIDE], dtype=v.dtype))
