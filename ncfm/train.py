"""Train one fold: two phases, the best checkpoint by validation log loss, resumable.

    ncfm train --fold 0 --run runs/inception299 [--data-dir data] [--config cfg.toml] [flags]

writes runs/inception299/fold0/:
    config.json     resolved settings (what this fold was trained with)
    history.csv     one row per epoch over both phases: epoch, phase, loss, accuracy, val_loss,
                    val_accuracy, learning_rate, seconds
    best.keras      the model with the lowest val_loss so far, without optimizer state
                    (written atomically)
    last.keras      the model + optimizer after the last finished epoch (for --resume), with
                    the fold's state and history at that epoch inside (ncfm/record.json)
    state.json      progress: epochs done, best epoch, early-stopping counter, finished
    oof.csv         out-of-fold predictions of best.keras: image,label,<8 class probabilities>
    train.log       the milestones printed on the console
    logs/           TensorBoard event files (when TensorFlow is installed)

Phase 1 trains the new head on a frozen backbone (BatchNorm in inference mode); phase 2
unfreezes the backbone and trains at a lower rate with cosine decay. Interrupt at any point
and rerun the same command: the fold continues after its last finished epoch, with the same
optimizer state, data order and augmentation stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import CLASSES, NcfmError
from ncfm.config import TrainConfig, make_config
from ncfm.fileio import atomic_write_text, fsync_dir, fsync_file

HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
# settings that may change between an interrupted run and its resumption
EXECUTION_FIELDS = {"workers", "cache_dir", "tensorboard", "jit_compile", "patience", "checkpoint_seconds"}


# ----------------------------------------------------------------------------- settings
def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Fill every 'auto' value so config.json says exactly what ran."""
    from ncfm import runtime
    from ncfm.model import get_backbone, resolve_weights

    spec = get_backbone(cfg.backbone)
    pretrained = cfg.weights not in ("none", "None", "")
    # SGD at 1e-2 diverges on a random InceptionV3 within a few steps; Adam at 1e-3 learns
    optimizer = cfg.optimizer if cfg.optimizer != "auto" else ("sgd" if pretrained else "adam")
    if optimizer not in ("sgd", "adam", "adamw"):
        raise NcfmError(f"optimizer must be auto, sgd, adam or adamw; received optimizer={cfg.optimizer!r}")
    fresh_lr = 1e-2 if optimizer == "sgd" else 1e-3
    if cfg.epochs < 1 or cfg.head_epochs < 0:
        raise NcfmError(f"need epochs >= 1 and head_epochs >= 0; received epochs={cfg.epochs}, "
                        f"head_epochs={cfg.head_epochs}")
    # refuse what build_model would refuse now, before minutes of decoding images
    image_size = cfg.image_size or spec.size
    if image_size < spec.min_size:
        raise NcfmError(f"image_size={image_size} is too small for {cfg.backbone}; its minimum is {spec.min_size}")
    resolve_weights(cfg.weights, spec)  # a missing weights file
    return dataclasses.replace(
        cfg,
        optimizer=optimizer,
        image_size=image_size,
        head_lr=cfg.head_lr or fresh_lr,
        # a pretrained backbone is fine-tuned gently; a random one has to learn from scratch
        lr=cfg.lr or (1e-4 if pretrained else fresh_lr),
        bn_momentum=cfg.bn_momentum or (0.99 if pretrained else 0.9),
        freeze_bn=str(cfg.freeze_bn if cfg.freeze_bn != "auto" else pretrained).lower(),
        mixed_precision=runtime.resolve_precision(cfg.mixed_precision),
        jit_compile="on" if runtime.resolve_jit(cfg.jit_compile) else "off",
    )


# ----------------------------------------------------------------------------- data
def read_manifest(folds_csv: Path, fold: int | None = None) -> tuple[pd.DataFrame, int]:
    if not folds_csv.is_file():
        raise NcfmError(f"{folds_csv}: folds manifest not found; run `ncfm split_train_val` first "
                        f"(or pass --folds-csv)")
    df = pd.read_csv(folds_csv)
    missing = {"image", "label", "fold"} - set(df.columns)
    if missing:
        raise NcfmError(f"{folds_csv}: missing columns {sorted(missing)}; expected image,label,fold[,group]")
    unknown = sorted(set(df.label) - set(CLASSES))
    if unknown:
        raise NcfmError(f"{folds_csv}: unknown labels {unknown}; expected {', '.join(CLASSES)}")
    folds = sorted(df.fold.unique())
    if fold is not None and fold not in folds:
        raise NcfmError(f"received fold={fold}, but {folds_csv} has folds {folds[0]}..{folds[-1]}")
    return df.reset_index(drop=True), len(folds)


def one_hot(labels) -> np.ndarray:
    index = {c: i for i, c in enumerate(CLASSES)}
    y = np.zeros((len(labels), len(CLASSES)), dtype="float32")
    y[np.arange(len(labels)), [index[c] for c in labels]] = 1.0
    return y


def make_batches(images, rows, labels=None, batch_size=32, train=False, seed=0, start_epoch=0, workers=2,
                 steps_per_epoch=0, pad=False):
    """A keras PyDataset over rows of the uint8 image cache.

    train=True: an endless stream of fixed-size batches, `steps_per_epoch` of them per epoch
    (default: all full batches; the remainder is dropped, so every step has the same shape and
    XLA compiles once); epoch e draws from permutation seed+e, so a resumed run sees exactly
    the batches an uninterrupted one would.
    train=False: each row once, in order; the last batch is smaller, or with pad=True (for
    prediction: one compiled shape) filled up by repeating its last row — drop the extra
    outputs with `[:len(rows)]`.
    """
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
            if train:
                self.steps = steps_per_epoch or len(rows) // batch_size
                if self.steps * batch_size > len(rows):
                    raise ValueError(f"{self.steps} steps of {batch_size} need {self.steps * batch_size} "
                                     f"rows; received {len(rows)}")
            else:
                self.steps = math.ceil(len(rows) / batch_size)
            self._orders = {}

        @property
        def num_batches(self):
            return None if train else self.steps

        def _order(self, epoch):
            orders = self._orders  # one read: worker threads may replace it meanwhile
            if epoch not in orders:
                orders = {epoch: np.random.default_rng(seed + epoch).permutation(len(rows))}
                self._orders = orders
            return orders[epoch]

        def __getitem__(self, i):
            if train:
                epoch, step = divmod(start_epoch * self.steps + i, self.steps)
                pick = np.sort(self._order(epoch)[step * batch_size:(step + 1) * batch_size])
            else:
                pick = np.arange(i * batch_size, min((i + 1) * batch_size, len(rows)))
                if pad and len(pick) < batch_size:
                    pick = np.concatenate([pick, np.full(batch_size - len(pick), pick[-1])])
            x = read_rows(images, rows[pick])
            return (x, labels[pick]) if labels is not None else (x,)

    return Batches()


def read_rows(images, index) -> np.ndarray:
    """images[index] as a new array. Rows of the on-disk cache are read with pread rather than
    through the memory map: mapped pages would stay in the process's resident memory, 3.5 GB for
    the 13,153 stage-2 images at 299, while read pages live only in the kernel's page cache."""
    filename = getattr(images, "filename", None)
    if not isinstance(images, np.memmap) or not filename or not hasattr(os, "preadv"):
        return np.asarray(images[index])
    out = np.empty((len(index),) + images.shape[1:], dtype=images.dtype)
    row_bytes = out[0].nbytes if len(index) else 0
    fd = os.open(filename, os.O_RDONLY)
    try:
        for j, i in enumerate(np.asarray(index, dtype=np.int64)):
            if os.preadv(fd, [out[j]], images.offset + int(i) * row_bytes) != row_bytes:
                raise OSError(f"{filename}: short read at row {i}; delete the cache file to rebuild it")
    finally:
        os.close(fd)
    return out


# ----------------------------------------------------------------------------- randomness
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


# ----------------------------------------------------------------------------- checkpoints
RECORD = "ncfm/record.json"  # inside a .keras checkpoint: the fold's progress when it was saved


def save_model_atomic(model, path: Path, record: dict | None = None) -> None:
    """model.save to a temp file, fsync, rename: a crash mid-write never breaks `path`.

    `record` (JSON) is stored inside the zip as RECORD (Keras ignores it when loading), so the
    file says which epoch it holds even if the process dies before state.json catches up."""
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        model.save(tmp)
        if record is not None:
            with zipfile.ZipFile(tmp, "a") as z:
                z.writestr(RECORD, json.dumps(record))
        fsync_file(tmp)
        tmp.replace(path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_record(path: Path) -> dict | None:
    """The RECORD saved inside a checkpoint, or None (absent, unreadable, older file)."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(RECORD))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _fold_callback(fold_dir: Path, phase: int, state: dict, history: list, cfg: TrainConfig, log):
    import keras
    from keras import ops

    class FoldCheckpoint(keras.callbacks.Callback):
        """Per epoch: history row, best weights on val_loss, early stopping in phase 2, a raise
        on NaN. Checkpoints are flushed to disk at most every `checkpoint_seconds` and at the end
        of each phase: best.keras (if a better epoch came since), last.keras, the commit point
        that resume trusts (it carries its epoch's state and history), then history.csv and
        state.json. On a GPU an epoch of NCFM takes about a second while saving InceptionV3 with
        its optimizer takes about one, so saving every epoch would double a fold's time; on a
        CPU an epoch outlasts the interval anyway.
        """

        def on_train_begin(self, logs=None):
            self.flushed_at, self.flushed_epoch = time.time(), state["epoch"]
            self.best_weights = None  # host copy of the best epoch not yet written to disk

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.time()
            self.lr = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))  # the epoch's first step
            reseed_random_layers(self.model, epoch)

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            seconds = time.time() - self.started
            loss, val_loss = float(logs.get("loss", np.nan)), float(logs.get("val_loss", np.nan))
            if not (np.isfinite(loss) and np.isfinite(val_loss)):
                raise FloatingPointError(
                    f"epoch {epoch + 1}: loss={loss}, val_loss={val_loss}; stopped. The last saved "
                    f"epoch is kept in {fold_dir / 'last.keras'}: lower the learning rate "
                    f"(--lr/--head-lr) and rerun the same command to resume from it")
            lr = self.lr
            row = dict(epoch=epoch + 1, phase=phase, loss=loss, accuracy=float(logs.get("accuracy", np.nan)),
                       val_loss=val_loss, val_accuracy=float(logs.get("val_accuracy", np.nan)),
                       learning_rate=lr, seconds=round(seconds, 3))
            history.append(row)
            improved = val_loss < state["best_val_loss"]
            if improved:
                self.best_weights = [np.array(ops.convert_to_numpy(w)) for w in self.model.weights]
                state.update(best_val_loss=val_loss, best_epoch=epoch + 1, wait=0)
            elif phase == 2 and epoch + 1 > state["best_epoch"]:
                # (epochs replayed after a resume that adopted a later best.keras do not count)
                state["wait"] += 1
            state.update(epoch=epoch + 1, phase=phase)
            log(f"epoch {epoch + 1:3d} phase {phase}  loss {loss:.4f}  acc {row['accuracy']:.3f}  "
                f"val_loss {val_loss:.4f}  val_acc {row['val_accuracy']:.3f}  lr {lr:.2e}  "
                f"{seconds:.1f}s{'  *best' if improved else ''}")
            if phase == 2 and cfg.patience and state["wait"] >= cfg.patience:
                log(f"early stopping: val_loss has not improved for {cfg.patience} epochs")
                state["stopped_early"] = True
                self.model.stop_training = True
            if time.time() - self.flushed_at >= cfg.checkpoint_seconds:
                self.flush()

        def on_train_end(self, logs=None):
            if history and history[-1]["epoch"] == state["epoch"] != self.flushed_epoch:
                self.flush()

        def flush(self):
            if self.best_weights is not None:
                # saved through an uncompiled twin that shares the model's layers: the same model
                # without the optimizer's slots, a third of the bytes (84 vs 251 MiB for
                # InceptionV3 with Adam) and 40% less time to write
                twin = keras.Model(self.model.input, self.model.output, name=self.model.name)
                current = self.model.get_weights()
                self.model.set_weights(self.best_weights)
                save_model_atomic(twin, fold_dir / "best.keras",
                                  {"best_epoch": state["best_epoch"], "best_val_loss": state["best_val_loss"]})
                self.model.set_weights(current)
                self.best_weights = None
            save_model_atomic(self.model, fold_dir / "last.keras", {"state": state, "history": history})
            write_history(fold_dir / "history.csv", history)
            atomic_write_text(fold_dir / "state.json", json.dumps(state, indent=2) + "\n")
            self.flushed_at, self.flushed_epoch = time.time(), state["epoch"]

    return FoldCheckpoint()


def write_history(path: Path, rows: list[dict]) -> None:
    df = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    atomic_write_text(path, df.to_csv(index=False))


# ----------------------------------------------------------------------------- training
def make_optimizer(cfg: TrainConfig, lr: float, total_steps: int, warmup_steps: int = 0):
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else lr,
        decay_steps=max(1, total_steps - warmup_steps), alpha=0.01,
        warmup_target=lr if warmup_steps else None, warmup_steps=warmup_steps)
    wd = cfg.weight_decay or None
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=cfg.momentum, nesterov=True, weight_decay=wd)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay or 1e-4)
    return keras.optimizers.Adam(schedule, weight_decay=wd)


def compile_model(model, cfg: TrainConfig, optimizer):
    import keras

    model.compile(optimizer=optimizer,
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                  metrics=["accuracy"], jit_compile=cfg.jit_compile == "on")


def augment_settings(cfg: TrainConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("hflip", "vflip", "rotation", "zoom", "shift", "shear",
                                          "brightness", "contrast")}


def _logger(path: Path):
    def log(message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        with open(path, "a") as f:
            f.write(line + "\n")

    return log


def split_digest(manifest: pd.DataFrame, max_train_images: int = 0) -> str:
    """What a fold's training and validation sets depend on: every image, label and fold."""
    text = manifest[["image", "label", "fold"]].to_csv(index=False) + f"max_train_images={max_train_images}\n"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _changed_settings(saved: dict, cfg: TrainConfig) -> list[str]:
    """Training settings that differ from those the fold was started with ('lr: 0.001 -> 0.01')."""
    return [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in dataclasses.asdict(cfg).items()
            if k not in EXECUTION_FIELDS and k in saved and saved[k] != v]


def _check_same_settings(saved: dict, cfg: TrainConfig, fold_dir: Path) -> None:
    changed = _changed_settings(saved, cfg)
    if changed:
        raise NcfmError(f"{fold_dir} was started with other settings ({'; '.join(changed)}); "
                        f"resume with the same settings, pass --retrain to start over, or use a new --run")


def train_fold(cfg: TrainConfig, data_dir: Path, folds_csv: Path, fold: int, run_dir: Path,
               retrain: bool = False, max_train_images: int = 0) -> dict:
    """Train (or resume, or skip if finished) one fold; returns the fold's summary.

    One process per fold at a time: a second `ncfm train` on a fold being trained stops at once.
    With `retrain` the old fold is set aside, not deleted, until the new one has its first
    checkpoint: if anything fails before that (an unreadable image, a missing weights file,
    Ctrl-C), the old fold is put back as it was.
    """
    with _fold_lock(run_dir, fold):
        fold_dir, replaced = run_dir / f"fold{fold}", run_dir / f".fold{fold}.replaced"
        _put_back_unless_checkpointed(replaced, fold_dir)  # left by a retrain that was killed
        if replaced.exists():  # the new fold had its first checkpoint: the old one is done with
            shutil.rmtree(replaced)
        if retrain and fold_dir.exists():
            fold_dir.rename(replaced)
        try:
            return _train_fold(cfg, data_dir, folds_csv, fold, run_dir, max_train_images)
        except BaseException:
            _put_back_unless_checkpointed(replaced, fold_dir)
            raise
        finally:
            if replaced.exists():
                shutil.rmtree(replaced, ignore_errors=True)


def _put_back_unless_checkpointed(replaced: Path, fold_dir: Path) -> None:
    """The fold set aside by --retrain comes back unless the new one has a checkpoint."""
    if replaced.exists() and not (fold_dir / "last.keras").is_file():
        shutil.rmtree(fold_dir, ignore_errors=True)
        replaced.rename(fold_dir)


@contextlib.contextmanager
def _fold_lock(run_dir: Path, fold: int):
    """An exclusive lock on run_dir/.fold<K>.lock while a process trains fold K. Two processes
    writing one fold's checkpoints would leave a fold that cannot resume."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform (Windows): one process per fold
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / f".fold{fold}.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "by another process"
            raise NcfmError(f"{run_dir / f'fold{fold}'}: already being trained ({holder}); wait for "
                            f"that run to end, or stop it, then rerun this command") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _train_fold(cfg: TrainConfig, data_dir: Path, folds_csv: Path, fold: int, run_dir: Path,
                max_train_images: int = 0) -> dict:
    import keras

    from ncfm import runtime
    from ncfm.cache import load_images
    from ncfm.model import build_model, freeze_backbone, unfreeze_backbone

    manifest, n_folds = read_manifest(folds_csv, fold)
    train_df, val_df = manifest[manifest.fold != fold], manifest[manifest.fold == fold]
    fold_dir = run_dir / f"fold{fold}"
    cfg = resolve_config(cfg)  # settings that cannot run are refused before any work
    fold_dir.mkdir(parents=True, exist_ok=True)
    log = _logger(fold_dir / "train.log")
    state_path = fold_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else None
    record = read_record(fold_dir / "last.keras")
    if record and record["state"]["epoch"] > (state or {}).get("epoch", 0):
        log(f"state.json is behind last.keras (stopped while saving epoch {record['state']['epoch']}): "
            f"resuming from the checkpoint's own record")
        state = dict(record["state"], finished=False)
    if state and state.get("finished") and (fold_dir / "oof.csv").is_file():
        try:
            changed = _changed_settings(json.loads((fold_dir / "config.json").read_text()), cfg)
        except (OSError, ValueError):  # only for the message: a finished fold is skipped anyway
            changed = []
        other = f" with other settings ({'; '.join(changed)})" if changed else ""
        log(f"fold {fold} already trained{other} (best epoch {state['best_epoch']}, val_loss "
            f"{state['best_val_loss']:.4f}); pass --retrain to train it again{' with these' if changed else ''}")
        return state

    split = split_digest(manifest, max_train_images)
    if state and (fold_dir / "config.json").is_file():
        saved = json.loads((fold_dir / "config.json").read_text())
        _check_same_settings(saved, cfg, fold_dir)
        if saved.get("split", split) != split:
            raise NcfmError(f"{folds_csv} is not the split {fold_dir} started with (its images, labels or "
                            f"folds changed, or --max-train-images did): resuming would validate on images "
                            f"the model trained on. Put the old manifest back, pass --retrain to start "
                            f"over, or use a new --run")
    runtime.setup(cfg.seed + fold, cfg.mixed_precision, cfg.deterministic)
    extra = dict(fold=fold, n_folds=n_folds, folds_csv=str(folds_csv), split=split, data_dir=str(data_dir),
                 backend=runtime.backend(), accelerator=runtime.accelerator(), keras=keras.__version__)
    cfg.to_json(fold_dir / "config.json", **extra)
    if max_train_images:  # for quick experiments and the benchmark
        train_df = train_df.iloc[:max_train_images]
    log(f"fold {fold}/{n_folds}: {len(train_df)} train, {len(val_df)} validation images; "
        f"{cfg.backbone} at {cfg.image_size}px, weights={cfg.weights}; {runtime.describe()}, "
        f"{cfg.mixed_precision}, XLA {cfg.jit_compile}")

    # decode once: one uint8 cache of the whole manifest, shared by every fold, epoch and view
    images = load_images(data_dir, list(manifest.image), cfg.image_size,
                         cache_dir=cfg.cache_dir or None, workers=cfg.workers)
    train_rows = manifest.index.get_indexer(train_df.index)
    val_rows = manifest.index.get_indexer(val_df.index)
    y_train, y_val = one_hot(train_df.label), one_hot(val_df.label)

    # Every fold takes the same number of steps per epoch (that of the smallest training split;
    # each epoch is a fresh random subset, so no image is left out for good). Identical step
    # counts give identical learning-rate schedules and so identical XLA programs: with JAX's
    # persistent compilation cache, folds 1..k-1 reuse fold 0's compilation.
    smallest = min((manifest.fold != k).sum() for k in manifest.fold.unique())
    if max_train_images:
        smallest = min(smallest, len(train_rows))
    batch = min(cfg.batch_size, smallest)
    steps = smallest // batch
    head_epochs = min(cfg.head_epochs, cfg.epochs)
    if state and (fold_dir / "last.keras").is_file() and state.get("epoch", 0) > 0:
        log(f"resuming after epoch {state['epoch']} (best {state['best_epoch']}, "
            f"val_loss {state['best_val_loss']:.4f})")
        model = keras.saving.load_model(fold_dir / "last.keras")
        if record and record["state"]["epoch"] == state["epoch"]:
            history = record["history"]
        else:  # a checkpoint written before records existed
            history = pd.read_csv(fold_dir / "history.csv").to_dict("records")[: state["epoch"]]
        best = read_record(fold_dir / "best.keras")
        if best and best["best_val_loss"] < state["best_val_loss"]:
            # best.keras was renamed into place, then the process died before last.keras
            state.update(best, wait=0)
    else:
        state = dict(epoch=0, phase=1, best_epoch=0, best_val_loss=float("inf"), wait=0, finished=False)
        history = []
        model = build_model(cfg.backbone, cfg.weights, cfg.image_size, cfg.dropout,
                            augment_settings(cfg), seed=cfg.seed + fold)
    val_data = make_batches(images, val_rows, y_val, batch_size=max(batch, 64))
    callbacks_common = []
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401
            import tensorflow  # noqa: F401  (the TensorBoard callback writes with tf.summary)

            callbacks_common.append(keras.callbacks.TensorBoard(fold_dir / "logs", write_graph=False))
        except ImportError:
            pass
    verbose = 1 if sys.stdout.isatty() else 2
    started = time.time()

    def run_phase(phase, first_epoch, last_epoch, resumed):
        if first_epoch >= last_epoch or state.get("stopped_early"):
            return
        if not resumed:
            if phase == 1:
                freeze_backbone(model)
                optimizer = make_optimizer(cfg, cfg.head_lr, steps * (last_epoch - first_epoch))
            else:
                n = unfreeze_backbone(model, cfg.unfreeze_from, cfg.freeze_bn == "true", cfg.bn_momentum)
                log(f"phase 2: backbone unfrozen ({n} trainable tensors), lr {cfg.lr:g}")
                optimizer = make_optimizer(cfg, cfg.lr, steps * (last_epoch - first_epoch),
                                           int(cfg.warmup_epochs * steps))
        else:
            optimizer = model.optimizer  # restored with its state from last.keras
        compile_model(model, cfg, optimizer)
        train_data = make_batches(images, train_rows, y_train, batch, train=True,
                                  seed=cfg.seed * 1000 + fold * 100, start_epoch=first_epoch,
                                  steps_per_epoch=steps)
        callback = _fold_callback(fold_dir, phase, state, history, cfg, log)
        model.fit(train_data, steps_per_epoch=steps, epochs=last_epoch, initial_epoch=first_epoch,
                  validation_data=val_data, callbacks=[callback, *callbacks_common], verbose=verbose, shuffle=False)

    done = state["epoch"]
    run_phase(1, done, head_epochs, resumed=done > 0 and done < head_epochs)
    done = state["epoch"]
    run_phase(2, max(done, head_epochs), cfg.epochs, resumed=done > head_epochs)

    oof = write_oof(fold_dir, val_df, images, val_rows, batch_size=max(batch, 64))
    from ncfm.calibrate import kaggle_log_loss

    labels = np.argmax(y_val, axis=1)
    state.update(finished=True, oof_log_loss=kaggle_log_loss(labels, oof),
                 oof_accuracy=float(np.mean(np.argmax(oof, axis=1) == labels)),
                 train_seconds=round(time.time() - started, 1))
    atomic_write_text(state_path, json.dumps(state, indent=2) + "\n")
    log(f"fold {fold} done: best epoch {state['best_epoch']}, OOF log loss {state['oof_log_loss']:.4f}, "
        f"accuracy {state['oof_accuracy']:.3f} -> {fold_dir}")
    _try_report(run_dir, log)
    return state


def write_oof(fold_dir: Path, val_df: pd.DataFrame, images, val_rows, batch_size: int) -> np.ndarray:
    """Predict the held-out rows with best.keras and write oof.csv."""
    import keras

    best = keras.saving.load_model(fold_dir / "best.keras", compile=False)
    probs = best.predict(make_batches(images, val_rows, None, batch_size=batch_size, pad=True), verbose=0)
    probs = np.asarray(probs, dtype="float64")[: len(val_rows)]
    probs /= probs.sum(axis=1, keepdims=True)
    out = pd.DataFrame(probs, columns=list(CLASSES))
    out.insert(0, "label", list(val_df.label))
    out.insert(0, "image", list(val_df.image))
    atomic_write_text(fold_dir / "oof.csv", out.to_csv(index=False, float_format="%.8f"))
    return probs


def _try_report(run_dir: Path, log) -> None:
    try:
        from ncfm import report

        report.build_report([run_dir])
    except Exception as e:  # a report must never cost a trained fold
        log(f"report skipped ({type(e).__name__}: {e})")


def main(args) -> int:
    overrides = {name: getattr(args, name) for name in TrainConfig.field_names()}
    cfg = make_config(args.config, **overrides)
    data_dir = Path(args.data_dir)
    folds_csv = Path(args.folds_csv) if args.folds_csv else data_dir / "folds.csv"
    train_fold(cfg, data_dir, folds_csv, args.fold, Path(args.run), retrain=args.retrain,
               max_train_images=args.max_train_images)
    return 0
