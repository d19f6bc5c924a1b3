"""The classifier family: train one fold (two phases, the best checkpoint by validation log loss,
resumable) on what every fold shares (ncfm.fold).

    ncfm train --fold 0 --run runs/inception299 [--data-dir data] [--config cfg.toml] [flags]

writes runs/inception299/fold0/ (the files are described, written and read by ncfm.runs):
config.json, state.json, history.csv, best.keras (the inference model: plain Keras, class names
inside), last.keras (model + optimizer + progress, for resuming), oof.csv, train.log, logs/.

Phase 1 trains the new head on a frozen backbone (BatchNorm in inference mode); phase 2
unfreezes the backbone and trains at a lower rate with cosine decay. Interrupt at any point
and rerun the same command: the fold continues after its last saved epoch, with the same
optimizer state, data order and augmentation stream.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from ncfm import NcfmError, runs
from ncfm.competition import Competition
from ncfm.config import RECIPES, TrainConfig, make_config
from ncfm.fold import FoldCheckpoint, checked, open_fold, resuming_line, split_digest, to_fold_log
from ncfm.progress import say

# ----------------------------------------------------------------------------- settings
def resolve_train_config(cfg: TrainConfig) -> TrainConfig:
    """Fill every 'auto' value so config.json says exactly what ran."""
    from ncfm import runtime
    from ncfm.augment import parse_randaugment
    from ncfm.model import get_backbone, resolve_weights

    spec = get_backbone(cfg.backbone)
    pretrained = is_pretrained(cfg.weights)
    # SGD at 1e-2 diverges on a random InceptionV3 within a few steps; Adam at 1e-3 learns
    optimizer = cfg.optimizer if cfg.optimizer != "auto" else (
        "adamw" if cfg.lr_decay != 1 else "sgd" if pretrained else "adam")
    if optimizer not in ("sgd", "adam", "adamw"):
        raise NcfmError(f"optimizer must be auto, sgd, adam or adamw; received optimizer={cfg.optimizer!r}")
    if not 0 < cfg.lr_decay <= 1 or (cfg.lr_decay != 1 and optimizer != "adamw"):
        raise NcfmError(f"received --lr-decay {cfg.lr_decay:g} --optimizer {cfg.optimizer}; layer-wise decay is a "
                        f"factor in (0, 1] (1 = off) and scales AdamW's steps: pass --optimizer adamw (or auto)")
    if cfg.precise_bn < 0:
        raise NcfmError(f"--precise-bn {cfg.precise_bn}: the number of training images is 0 (off) or more")
    if not 0 <= cfg.ema < 1:
        raise NcfmError(f"--ema {cfg.ema:g}: the average's decay per step is in [0, 1) (0.99 to 0.9999; 0 = off)")
    fresh_lr = 1e-2 if optimizer == "sgd" else 1e-3
    if cfg.epochs < 1 or cfg.head_epochs < 0:
        raise NcfmError(f"need epochs >= 1 and head_epochs >= 0; received epochs={cfg.epochs}, "
                        f"head_epochs={cfg.head_epochs}")
    # refuse what build_model would refuse now, before minutes of decoding images
    image_size = cfg.image_size or spec.size
    if image_size < spec.min_size:
        raise NcfmError(f"image_size={image_size} is too small for {cfg.backbone}; its minimum is {spec.min_size}")
    resolve_weights(cfg.weights, spec)  # a missing weights file
    checked(parse_randaugment, cfg.randaugment)
    devices = len(training_devices(cfg))
    from ncfm.batches import MIXES

    if cfg.mix not in MIXES or not 0.0 <= cfg.mix_prob <= 1.0 or cfg.mix_alpha < 0:
        raise NcfmError(f"received --mix {cfg.mix} --mix-prob {cfg.mix_prob} --mix-alpha {cfg.mix_alpha}; --mix is one "
                        f"of {', '.join(MIXES)}, --mix-prob in [0, 1], --mix-alpha 0 or more")
    if cfg.mix != "none" and cfg.data_on_device:
        raise NcfmError(f"--mix {cfg.mix} mixes batches on the host; leave out --data-on-device (or --mix)")
    if cfg.data_on_device and (runtime.backend() != "jax" or devices > 1):
        raise NcfmError(f"--data-on-device true needs the JAX backend and one device (here: {runtime.backend()}, "
                        f"{devices} device{'s' * (devices > 1)}); leave it out, or set KERAS_BACKEND=jax and "
                        f"--devices 1")
    return dataclasses.replace(
        cfg,
        optimizer=optimizer,
        image_size=image_size,
        head_lr=cfg.head_lr or fresh_lr,
        # a pretrained backbone is fine-tuned gently; a random one has to learn from scratch
        lr=cfg.lr or (1e-4 if pretrained else fresh_lr),
        bn_momentum=cfg.bn_momentum or (0.99 if pretrained else 0.9),
        freeze_bn=str(cfg.freeze_bn if cfg.freeze_bn != "auto" else pretrained).lower(),
        mixed_precision=checked(runtime.resolve_precision, cfg.mixed_precision),
        jit_compile="on" if checked(runtime.resolve_jit, cfg.jit_compile, devices) else "off",
        devices=str(devices),
    )


def recipe_line(recipe: str) -> str:
    chosen = ", ".join(f"{k}={v}" for k, v in RECIPES[recipe].items())
    return (f"recipe {recipe}: {chosen} where no flag or config file sets them" if chosen else
            f"recipe {recipe}: the same settings as classic (no addition has beaten classic on held-out images "
            f"yet, docs/recipe.md); the additions are flags of their own")


def is_pretrained(weights: str) -> bool:
    return weights not in ("none", "None", "")


def training_devices(cfg: TrainConfig) -> list[str]:
    """The devices --devices names (ncfm.runtime.resolve_devices), refusing a --batch-size that they
    cannot split evenly: it is the global batch, each step gives every device the same share."""
    from ncfm import runtime

    devices = checked(runtime.resolve_devices, cfg.devices)
    checked(runtime.check_batch_split, cfg.batch_size, devices, cfg.devices)
    return devices


# ----------------------------------------------------------------------------- the fold
def train_fold(cfg: TrainConfig, comp: Competition, data_dir: Path, folds_csv: Path, fold: int,
               run_dir: Path, retrain: bool = False, max_train_images: int = 0, notes: dict | None = None) -> dict:
    """Train (or resume, or skip if finished) one fold; returns its state.

    One process per fold at a time: a second `ncfm train` on a fold being trained stops at once.
    With `retrain` the old fold is set aside until the new one has its first checkpoint.
    `notes` go into config.json as they are (a crop run: its detector and crop set).
    """
    from ncfm import runtime

    target = runs.fold_of(run_dir, fold)
    devices = training_devices(cfg)  # before any device is set up
    with runs.fold_lock(target), runs.replacing(target, retrain), runtime.data_parallel(devices):
        return _train_fold(cfg, comp, data_dir, folds_csv, target, max_train_images, notes or {})


def _train_fold(cfg: TrainConfig, comp: Competition, data_dir: Path, folds_csv: Path, fold: runs.Fold,
                max_train_images: int, notes: dict) -> dict:
    from ncfm import runtime
    from ncfm.folds import read_manifest
    from ncfm.cache import load_images
    from ncfm.task import targets as targets_of

    # Everything that can be refused is refused before a file is written.
    manifest, n_folds = read_manifest(folds_csv, fold.index, comp=comp)
    devices_setting, requested_precision, cfg = cfg.devices, cfg.mixed_precision, resolve_train_config(cfg)
    devices = training_devices(cfg)
    smallest = _smallest_training_split(manifest, max_train_images, folds_csv, devices, devices_setting)
    precision_reason = runtime.choose_precision(requested_precision)[1]  # config.json says why
    split = split_digest(manifest, max_train_images)
    state, history = open_fold(fold, cfg, runs.CLASSIFIER, split, folds_csv)
    if state["finished"]:
        return state

    with to_fold_log(fold):
        runtime.setup(cfg.seed + fold.index, cfg.mixed_precision, cfg.deterministic)
        runs.write_config(fold, dataclasses.asdict(cfg) | dict(
            kind=runs.CLASSIFIER, fold=fold.index, n_folds=n_folds, folds_csv=str(folds_csv), split=split,
            data_dir=str(data_dir), classes=list(comp.classes), competition=comp.slug, backend=runtime.backend(),
            accelerator=runtime.accelerator(), device_names=devices, keras=keras.__version__,
            precision_reason=precision_reason) | notes)
        train_df, val_df = manifest[manifest.fold != fold.index], manifest[manifest.fold == fold.index]
        if max_train_images:  # for quick experiments and the benchmark
            train_df = train_df.iloc[:max_train_images]
        outputs = f"{comp.num_classes} classes" if comp.task == "single" else (
            f"{comp.num_classes} labels" if comp.kind == "multilabel" else f"one {comp.kind} output")
        say(f"fold {fold.index}/{n_folds}: {len(train_df)} train, {len(val_df)} validation images, "
            f"{outputs}; {cfg.backbone} at {cfg.image_size}px, weights={cfg.weights}; "
            f"{runtime.describe()}, XLA {cfg.jit_compile}; {cfg.mixed_precision}: {precision_reason}")
        if devices_line := runtime.describe_devices(devices, devices_setting):
            say(devices_line)
        if cfg.recipe != "classic":
            say(recipe_line(cfg.recipe))

        # decode once: one uint8 cache of the whole manifest, shared by every fold, epoch and view
        images = load_images(data_dir, list(manifest.image), cfg.image_size,
                             cache_dir=cfg.cache_dir or None, workers=cfg.workers)
        if cfg.data_on_device:
            from ncfm.batches import to_device

            images = checked(to_device, images)
            say(f"image cache on the device: {images.nbytes / 2**20:,.0f} MiB; batches are gathered there")
        rows = (manifest.index.get_indexer(train_df.index), manifest.index.get_indexer(val_df.index))
        targets = (targets_of(comp, train_df.label), targets_of(comp, val_df.label))
        # Every fold takes the same number of steps per epoch (that of the smallest training split;
        # each epoch is a fresh random subset, so no image is left out for good). Identical step
        # counts give identical learning-rate schedules and so identical XLA programs: with JAX's
        # persistent compilation cache, folds 1..k-1 reuse fold 0's compilation.
        batch = min(cfg.batch_size, smallest - smallest % len(devices))  # every device gets as many images
        started = time.time()
        val_batch = _fit(cfg, comp, fold, state, history, images, rows, targets, batch, smallest // batch,
                         len(devices))
        if cfg.precise_bn:
            _precise_bn(cfg, comp, fold, state, images, rows, targets, batch, val_batch)
        if comp.task != "single":
            return _score_task_fold(cfg, comp, fold, state, images, rows, train_df, val_df, val_batch, started)
        return _score_fold(cfg, comp, fold, state, images, rows, targets, val_df, val_batch, started)


def _fit(cfg: TrainConfig, comp: Competition, fold: runs.Fold, state: dict, history: list, images, rows, targets,
         batch: int, steps: int, n_devices: int) -> int:
    """Both phases from where the fold stands (a new model, or last.keras); returns the validation batch."""
    from ncfm.batches import make_batches
    from ncfm.model import build_model, freeze_backbone, layer_decay_scales, unfreeze_backbone

    (train_rows, val_rows), (y_train, y_val) = rows, targets
    head_epochs = min(cfg.head_epochs, cfg.epochs)
    if state["epoch"] > 0:
        say(resuming_line(state))
        model = runs.load_last(fold)
    else:
        model = build_model(cfg.backbone, cfg.weights, cfg.image_size, cfg.dropout, augment_settings(cfg),
                            seed=cfg.seed + fold.index, num_classes=comp.num_classes,
                            activation="softmax" if comp.task == "single" else "sigmoid")
        if comp.task != "single":
            _start_at_the_mean(model, y_train)
    checkpoint = ClassifierCheckpoint(fold, state, history, cfg, comp.classes)
    # several devices split every batch evenly, so the last validation batch is padded (weighted 0)
    val_batch = max(batch, 64 - 64 % n_devices)
    val_data = make_batches(images, val_rows, y_val, batch_size=val_batch, pad=n_devices > 1)
    extra_callbacks = _tensorboard(fold) if cfg.tensorboard else []

    def run_phase(phase, first_epoch, last_epoch):
        start = max(state["epoch"], first_epoch)  # later than first_epoch when resumed mid-phase
        if start >= last_epoch or state.get("stopped_early"):
            return
        checkpoint.phase = phase
        if start > first_epoch:
            optimizer = model.optimizer  # restored with its state from last.keras
        elif phase == 1:
            freeze_backbone(model)
            optimizer = make_optimizer(cfg, cfg.head_lr, steps * (last_epoch - first_epoch))
        else:
            n = unfreeze_backbone(model, cfg.unfreeze_from, cfg.freeze_bn == "true", cfg.bn_momentum)
            scales, stages = layer_decay_scales(model, cfg.lr_decay) if cfg.lr_decay != 1 else ({}, 0)
            decay = f", x{cfg.lr_decay:g} per backbone stage down to x{cfg.lr_decay ** stages:.3g} ({stages} stages)"
            say(f"phase 2: backbone unfrozen ({n} trainable tensors), lr {cfg.lr:g}{decay if scales else ''}")
            optimizer = make_optimizer(cfg, cfg.lr, steps * (last_epoch - first_epoch),
                                       int(cfg.warmup_epochs * steps), scales)
        compile_model(model, cfg, optimizer, comp.task)
        train_data = make_batches(images, train_rows, y_train, batch, train=True, start_epoch=start,
                                  seed=cfg.seed * 1000 + fold.index * 100, steps_per_epoch=steps,
                                  mix=cfg.mix, mix_alpha=cfg.mix_alpha, mix_prob=cfg.mix_prob)
        model.fit(train_data, steps_per_epoch=steps, epochs=last_epoch, initial_epoch=start,
                  validation_data=val_data, callbacks=[checkpoint, *extra_callbacks],
                  verbose=1 if sys.stdout.isatty() else 2, shuffle=False)

    run_phase(1, 0, head_epochs)
    run_phase(2, head_epochs, cfg.epochs)
    return val_batch


def _precise_bn(cfg: TrainConfig, comp: Competition, fold: runs.Fold, state: dict, images, rows, targets,
                batch: int, val_batch: int) -> None:
    """--precise-bn: best.keras' BatchNorm statistics recomputed for its weights from the fold's
    training images (ncfm.model.recompute_bn_statistics), in full training-size batches of a fixed
    seeded draw, and kept only if the held-out images' loss does not rise (from a model that has
    barely trained, the statistics its training batches really have can be far from the ones it
    learned to predict with). Rerunning it (a fold killed before its OOF) reaches the same file."""
    from ncfm.model import inference_model

    (train_rows, val_rows), (_, y_val) = rows, targets
    picked = precise_bn_rows(train_rows, cfg.precise_bn, batch, cfg.seed + fold.index)
    if not len(picked):
        say(f"precise BN skipped: {len(train_rows)} training images make no full batch of {batch}")
        return
    best = runs.load_best(fold)
    count, before, after, kept = recompute_if_better(best, comp.task, images, picked, batch, val_rows, y_val,
                                                     val_batch)
    if not count:
        say("precise BN: no BatchNorm layer of best.keras trains (frozen BatchNorm or backbone); left as it is")
        return
    state["precise_bn"] = dict(images=len(picked), layers=count, held_out_loss_before=before,
                               held_out_loss_after=after if np.isfinite(after) else None, kept=kept)
    if kept:
        runs.save_model(inference_model(best), fold.best, classes=list(comp.classes),
                        record=runs.read_record(fold.best))
    say(f"precise BN: {count} BatchNorm layers' statistics recomputed from {len(picked)} training images; "
        f"held-out loss {before:.4f} -> {after:.4f}: "
        + ("best.keras keeps them" if kept else "higher, so best.keras keeps the statistics of training"))


def recompute_if_better(model, task: str, images, picked, batch: int, val_rows, y_val, val_batch: int):
    """Precise BN on `model` in place from the `picked` training rows; returns (BatchNorm layers
    recomputed, held-out loss before, after, whether the new statistics are to be kept: the loss is
    finite and did not rise). Saving, or not, is the caller's."""
    from ncfm.batches import read_rows
    from ncfm.model import recompute_bn_statistics, trainable_batch_norms

    if not trainable_batch_norms(model):  # frozen BatchNorm (pretrained) or backbone: nothing to measure
        return 0, np.nan, np.nan, False
    before = held_out_loss(task, _held_out_outputs(model, images, val_rows, val_batch), y_val)
    count = recompute_bn_statistics(model, (read_rows(images, picked[i:i + batch])
                                            for i in range(0, len(picked), batch)))
    after = held_out_loss(task, _held_out_outputs(model, images, val_rows, val_batch), y_val)
    return count, before, after, bool(np.isfinite(after) and after <= before)


def held_out_loss(task: str, outputs: np.ndarray, targets: np.ndarray) -> float:
    """The loss precise BN is judged by on held-out outputs: for one label the log loss that OOF
    reports (Kaggle's), otherwise the mean binary cross-entropy of the sigmoids (clipped at Keras'
    1e-7), as the other tasks train."""
    from ncfm.calibrate import kaggle_log_loss

    y = np.asarray(targets, dtype="float64")
    if task == "single":
        return kaggle_log_loss(np.argmax(y, axis=1), outputs)
    p = np.clip(np.asarray(outputs, dtype="float64"), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def precise_bn_rows(train_rows, n: int, batch: int, seed: int) -> np.ndarray:
    """The rows --precise-bn averages over: up to `n` of `train_rows` in whole batches, a draw fixed
    by `seed`, in cache order (an empty array when not one batch is full)."""
    n = min(n, len(train_rows))
    n -= n % batch
    picked = np.sort(np.random.default_rng(seed).permutation(len(train_rows))[:n])
    return np.asarray(train_rows)[picked]


def _score_fold(cfg: TrainConfig, comp: Competition, fold: runs.Fold, state: dict, images, rows, targets,
                val_df: pd.DataFrame, val_batch: int, started: float) -> dict:
    """best.keras on the held-out images: oof.csv, the scores and the class priors' in state.json."""
    from ncfm.calibrate import class_shares, no_better, prior_margin, prior_score, score

    (_, val_rows), (y_train, y_val) = rows, targets
    oof = _held_out_outputs(runs.load_best(fold), images, val_rows, val_batch)
    oof /= oof.sum(axis=1, keepdims=True)
    runs.write_oof(fold, val_df.image, val_df.label, oof, comp.classes)
    labels = np.argmax(y_val, axis=1)
    positive = comp.positive_index()
    state.update(finished=True, stop_reason=_why_it_ended(cfg, state), oof_log_loss=score("log_loss", labels, oof),
                 oof_accuracy=score("accuracy", labels, oof), train_seconds=round(time.time() - started, 1))
    also = ""
    if comp.metric not in ("log_loss", "accuracy"):  # the competition's own, e.g. ROC AUC
        state[f"oof_{comp.metric}"] = score(comp.metric, labels, oof, positive)
        also = f", {comp.metric_name} {state[f'oof_{comp.metric}']:.4f}"
    # a model that learned nothing predicts the class shares of its training rows: the bar a member must pass
    shares = class_shares(np.argmax(y_train, axis=1), comp.num_classes)
    for metric in dict.fromkeys(("log_loss", comp.metric)):
        state[f"prior_{metric}"] = prior_score(metric, labels, shares, positive)
    mine, priors = state[f"oof_{comp.metric}"], state[f"prior_{comp.metric}"]
    state["prior_margin"] = margin = prior_margin(comp.metric, labels, oof, shares)
    state["no_better_than_priors"] = no_better(comp.metric, mine, priors, margin)
    runs.write_state(fold, state)
    say(f"fold {fold.index} done ({state['stop_reason']}): best epoch {state['best_epoch']}, OOF log loss "
        f"{state['oof_log_loss']:.4f} (class priors {state['prior_log_loss']:.4f}), accuracy "
        f"{state['oof_accuracy']:.3f}{also} -> {fold.dir}")
    if state["no_better_than_priors"]:
        weights = "" if is_pretrained(cfg.weights) else " or pretrained weights (--weights)"
        say(f"WARNING: fold {fold.index} is no better than the class priors: OOF {comp.metric_name} {mine:.4f} "
            f"against {priors:.4f} for predicting its training class shares on the same {len(labels)} images "
            f"(it must beat them by more than twice the standard error of the difference, {margin:.4f}). "
            f"`ncfm predict` pulls it towards the class priors by a weight fitted on its OOF (--weak-folds shrink; "
            f"--weak-folds priors leaves it out). Give it more epochs "
            f"(--epochs), a higher learning rate (--lr){weights}: "
            f"add them to {fold.retrain_hint()}")
    return state


def _held_out_outputs(model, images, val_rows, val_batch: int) -> np.ndarray:
    """The model's outputs on the fold's held-out rows (padded batches of one compiled shape, trimmed)."""
    from ncfm.batches import make_batches

    oof = model.predict(make_batches(images, val_rows, None, batch_size=val_batch, pad=True), verbose=0)
    return np.asarray(oof, dtype="float64")[: len(val_rows)]


def _start_at_the_mean(model, y_train: np.ndarray) -> None:
    """Set the sigmoid head's biases so that a new model outputs the training mean of each target (a
    label's frequency, the mean scaled number or grade) instead of 0.5: the first epochs then learn
    from the images rather than the targets' level, which from random weights they would spend on."""
    from ncfm.model import classifier_of

    mean = np.clip(np.asarray(y_train, dtype="float64").mean(axis=0), 1e-3, 1 - 1e-3)
    head = classifier_of(model).get_layer("probs")
    kernel, _ = head.get_weights()
    head.set_weights([kernel, np.log(mean / (1 - mean)).astype(kernel.dtype)])


def _score_task_fold(cfg: TrainConfig, comp: Competition, fold: runs.Fold, state: dict, images, rows,
                     train_df: pd.DataFrame, val_df: pd.DataFrame, val_batch: int, started: float) -> dict:
    """_score_fold for several labels, a number or a grade (ncfm.task): oof.csv holds the sigmoid
    outputs; state.json the competition's metric under the fixed rule (thresholds 0.5, plain rounding;
    predict fits better ones on every fold's OOF) and that of an answer that ignores the image
    (task.baseline: the label frequencies, the mean value, the most common grade)."""
    from ncfm import task
    from ncfm.calibrate import no_better

    oof = _held_out_outputs(runs.load_best(fold), images, rows[1], val_batch)
    runs.write_oof(fold, val_df.image, val_df.label, oof, comp.classes)
    mine = task.score(comp, val_df.label, oof)
    baseline = task.baseline(comp, train_df.label, val_df.label)
    state.update(finished=True, stop_reason=_why_it_ended(cfg, state), train_seconds=round(time.time() - started, 1))
    state.update({"metric": comp.metric, f"oof_{comp.metric}": mine, f"prior_{comp.metric}": baseline,
                  "prior_margin": 0.0, "no_better_than_priors": no_better(comp.metric, mine, baseline)})
    runs.write_state(fold, state)
    say(f"fold {fold.index} done ({state['stop_reason']}): best epoch {state['best_epoch']}, OOF {comp.metric_name} "
        f"{mine:.4f} ({task.FIXED_RULE[comp.kind]}; predict fits it on every fold's OOF), against {baseline:.4f} for "
        f"{task.BASELINE[comp.kind]} -> {fold.dir}")
    if state["no_better_than_priors"]:
        weights = "" if is_pretrained(cfg.weights) else " or pretrained weights (--weights)"
        say(f"WARNING: fold {fold.index} is no better than {task.BASELINE[comp.kind]} on its {len(val_df)} held-out "
            f"images. Give it more epochs (--epochs), a higher learning rate (--lr){weights}: add them to "
            f"{fold.retrain_hint()}")
    return state


def _smallest_training_split(manifest: pd.DataFrame, max_train_images: int, folds_csv: Path, devices: list,
                             devices_setting: str) -> int:
    """The fewest training images any fold has (after --max-train-images): every fold's epoch takes
    that many images' worth of steps. Refuses a split that leaves a fold nothing to train on, or
    fewer images than devices."""
    smallest = int(min((manifest.fold != k).sum() for k in manifest.fold.unique()))
    smallest = min(smallest, max_train_images) if max_train_images else smallest
    if smallest == 0:
        raise NcfmError(f"{folds_csv}: a fold has no training images (one fold holds every image); "
                        f"rerun `ncfm split_train_val --force` with --folds 2 or more")
    if smallest < len(devices):
        raise NcfmError(f"{folds_csv}: the smallest fold's training split has {smallest} image"
                        f"{'s' * (smallest != 1)}, fewer than the {len(devices)} devices (--devices "
                        f"{devices_setting}) that each need one per step; pass --devices {smallest}, "
                        f"or add training images")
    return smallest


def _why_it_ended(cfg: TrainConfig, state: dict) -> str:
    """state.json's stop_reason: early stopping (set as it stopped) or every epoch run."""
    if state.get("stopped_early"):
        return state.get("stop_reason", "early stopping (--patience)")
    why = f"ran to its last epoch ({cfg.epochs})"
    if cfg.epochs > cfg.head_epochs and state["best_epoch"] <= cfg.head_epochs:
        why += (f"; phase 2 never improved on the head's best val_loss (epoch {state['best_epoch']}), so "
                f"early stopping never counted and best.keras is that head epoch")
    return why


def _tensorboard(fold: runs.Fold) -> list:
    try:
        import tensorboard  # noqa: F401
        import tensorflow  # noqa: F401  (the TensorBoard callback writes with tf.summary)
    except ImportError:
        return []
    return [keras.callbacks.TensorBoard(fold.logs, write_graph=False)]


# ----------------------------------------------------------------------------- per epoch
class ClassifierCheckpoint(FoldCheckpoint):
    """ncfm.fold's per-epoch bookkeeping for a classifier: two phases, accuracy in the history,
    best.keras the inference model with the class names inside."""

    history_columns = runs.HISTORY_COLUMNS
    lr_flags = "--lr/--head-lr"

    def __init__(self, fold: runs.Fold, state: dict, history: list, cfg: TrainConfig, classes):
        super().__init__(fold, state, history, cfg)
        self.classes = classes

    def history_row(self, epoch: int, logs: dict, seconds: float) -> dict:
        return dict(epoch=epoch + 1, phase=self.phase, loss=float(logs.get("loss", np.nan)),
                    accuracy=float(logs.get("accuracy", np.nan)), val_loss=float(logs.get("val_loss", np.nan)),
                    val_accuracy=float(logs.get("val_accuracy", np.nan)), learning_rate=self.lr,
                    seconds=round(seconds, 3))

    def progress_line(self, row: dict) -> str:
        return (f"epoch {row['epoch']:3d} phase {row['phase']}  loss {row['loss']:.4f}  acc {row['accuracy']:.3f}  "
                f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.3f}  lr {self.lr:.2e}  "
                f"{row['seconds']:.1f}s")

    def counts_patience(self, epoch: int) -> bool:
        """Whether an epoch without improvement counts towards early stopping: in phase 2, once
        phase 2 has improved on the best val_loss, i.e. once the best epoch is a phase-2 epoch.

        From scratch the head epochs on a random frozen backbone predict about uniformly, and the
        unfrozen model can take many epochs to beat that val_loss while its accuracy climbs:
        counting from the head's best would stop such a fold while it is still learning. A phase 2
        that never beats the head runs all its epochs. The rule reads only best_epoch, which
        last.keras' record carries, so a resumed fold decides as an uninterrupted one."""
        return self.phase == 2 and self.state["best_epoch"] > self.cfg.head_epochs

    def save_best(self, record: dict) -> None:
        """best.keras, while the model holds the best weights: the inference model (it shares the
        training model's layers; no augmentation, no optimizer slots) with the class names."""
        from ncfm.model import inference_model

        runs.save_model(inference_model(self.model), self.fold.best, classes=self.classes, record=record)


# ----------------------------------------------------------------------------- model and optimizer
def make_optimizer(cfg: TrainConfig, lr: float, total_steps: int, warmup_steps: int = 0, scales: dict | None = None):
    """The phase's optimizer on a cosine schedule. With --ema it keeps Keras' moving average of the
    weights (use_ema; ncfm.fold validates and saves it); `scales` (variable path -> learning-rate
    factor, --lr-decay) makes AdamW a LayerwiseAdamW."""
    from ncfm.model import LayerwiseAdamW

    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else lr,
        decay_steps=max(1, total_steps - warmup_steps), alpha=0.01,
        warmup_target=lr if warmup_steps else None, warmup_steps=warmup_steps)
    wd = cfg.weight_decay or None
    ema = dict(use_ema=True, ema_momentum=cfg.ema) if cfg.ema else {}
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=cfg.momentum, nesterov=True, weight_decay=wd, **ema)
    if cfg.optimizer == "adamw":
        if scales:
            return LayerwiseAdamW(schedule, weight_decay=cfg.weight_decay or 1e-4, scales=scales, **ema)
        return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay or 1e-4, **ema)
    return keras.optimizers.Adam(schedule, weight_decay=wd, **ema)


def compile_model(model, cfg: TrainConfig, optimizer, task: str = "single"):
    # Accuracy is a weighted metric: the padding of a padded validation batch has weight 0.
    # Under mixed_float16, auto_scale_loss wraps the optimizer in a LossScaleOptimizer (small
    # float16 gradients underflow to zero without it; tests/test_precision.py shows both). A
    # LossScaleOptimizer restored from last.keras is not wrapped twice.
    # The other tasks (ncfm.task) train every sigmoid output with binary cross-entropy; their
    # "accuracy" is the share of outputs on the right side of 0.5 (Keras would take the top output of
    # several labels for a class; for a number or a grade it is a rough sign only).
    if task == "single":
        loss, accuracy = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing), "accuracy"
    else:  # label smoothing would move a number's or a grade's target: only several labels take it
        loss = keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing if task == "multilabel" else 0.0)
        accuracy = keras.metrics.BinaryAccuracy(name="accuracy")
    model.compile(optimizer=optimizer, loss=loss, weighted_metrics=[accuracy],
                  jit_compile=cfg.jit_compile == "on", auto_scale_loss=True)


def augment_settings(cfg: TrainConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("hflip", "vflip", "rotation", "zoom", "shift", "shear",
                                          "brightness", "contrast", "erasing", "randaugment")}


# ----------------------------------------------------------------------------- command
def main(args, detector_boxes=None) -> int:
    """`ncfm train --fold K`. With --detector RUN, `detector_boxes(RUN, data_dir, comp)` gives that
    detector run's boxes (ncfm.detect.run_boxes, handed down by the command layer) and the fold
    trains on their crops."""
    from ncfm.folds import folds_csv_path
    from ncfm import runtime
    from ncfm.dataset import competition_for

    overrides = {name: getattr(args, name) for name in TrainConfig.field_names()}
    cfg = make_config(args.config, **overrides)
    data_dir = Path(args.data_dir)
    folds_csv = folds_csv_path(data_dir, args.folds_csv)
    comp = competition_for(data_dir, folds_csv)
    # which GPU(s) this process was given (Ray sets it per member of `ncfm train --folds`)
    notes = {"cuda_visible_devices": runtime.visible_devices()}
    if args.detector and comp.task != "single":
        raise NcfmError(f"--detector {args.detector}: the crop path classifies fish into one class per image; this "
                        f"competition's answer is {comp.kind}. Train on whole images (leave out --detector)")
    if args.detector:  # a crop classifier: train on the crops of the detector's boxes
        crop_set = _crop_set(cfg, comp, data_dir, detector_boxes(Path(args.detector), data_dir, comp), args.detector)
        notes |= {"detector": str(args.detector), "crop_set": str(crop_set.dir), "crop_classes": list(crop_set.classes)}
        comp, data_dir, folds_csv = crop_set.competition(comp), crop_set.dir, crop_set.manifest(args.fold)
    train_fold(cfg, comp, data_dir, folds_csv, args.fold, Path(args.run), retrain=args.retrain,
               max_train_images=args.max_train_images, notes=notes)
    return 0


def _crop_set(cfg: TrainConfig, comp: Competition, data_dir: Path, boxes, detector_run):
    """The crop set of a detector run's boxes (ncfm.detect.RunBoxes), cut as cfg's crop settings say."""
    from ncfm.crops import CropSettings, build_crop_set

    settings = CropSettings(size=resolve_train_config(cfg).image_size, margin=cfg.crop_margin, aspect=cfg.crop_aspect,
                            jitters=cfg.crop_jitters, seed=cfg.seed, top_boxes=cfg.crop_top_boxes,
                            box_floor=cfg.crop_box_floor, train_misses=cfg.crop_train_misses)
    crop_set = build_crop_set(data_dir, Path(detector_run).name, comp.classes, boxes.manifest, boxes.truth,
                              boxes.found_oof, boxes.found_test, settings, without_boxes=boxes.empty_classes,
                              workers=cfg.workers)
    counts = crop_set.counts
    say(f"crops: {crop_set.dir} ({counts['true']} from true boxes, {counts['oof']} from the detector's "
        f"held-out boxes, {counts.get('oof_hits', '?')} of them on a fish; {len(crop_set.classes)} classes)")
    return crop_set
