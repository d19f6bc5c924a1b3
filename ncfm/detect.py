"""Find the fish: train a RetinaNet for one fold, write the boxes it finds.

    ncfm boxes                                   # the community's boxes -> data/boxes.csv
    ncfm detect --fold 0 --run runs/det          # one detector fold -> runs/det/fold0/
    ncfm detect --fold 0 --run runs/det --test   # ... and its boxes for every test stage

The detector family, a peer of the classifier (ncfm.train) on what every fold shares
(ncfm.fold: resolved config, one resume rule, atomic best/last checkpoints with the fold's
progress inside, resume after a kill, history, a progress line per epoch; its files in
ncfm.runs). It trains on the classifier's own group folds: images of classes
with boxes are positives (their boxes), images of the class without boxes (NoF) are negatives;
fish images nobody boxed are left out of training (they hold a fish, so they are not negatives)
but still get found boxes. The best epoch is the one with the lowest validation loss (focal
classification + box regression, keras-hub's RetinaNet loss).

The detector is keras-hub's RetinaNetObjectDetector (Keras 3, every backend) with one class,
"fish": fish/no-fish detectors gave the NCFM competitors better crops than per-species ones.
Images are squashed to a square `image_size` (the cache's recipe); found boxes are mapped back
to the original pixels. Weights: coco (the RetinaNet ResNet-50 FPN preset, downloaded from
Kaggle Models once), imagenet (a ResNet-50 backbone preset), none (random; tests, the demo), or
the path of a downloaded keras-hub preset folder (offline machines, Kaggle notebooks).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from ncfm import NcfmError, runs
from ncfm.boxes import detection_quality
from ncfm.competition import Competition
from ncfm.config import DetectConfig
from ncfm.fold import FoldCheckpoint, checked, open_fold, resuming_line, split_digest, to_fold_log
from ncfm.progress import say

FISH = 0  # the detector's one class
BOX_FORMAT = "xywh"  # the Sloth annotations' form: top-left corner, width, height
PRESETS = {"coco": "retinanet_resnet50_fpn_coco", "imagenet": "resnet_50_imagenet"}
# a found box narrower or lower than this many input pixels after clipping to the frame is no box (a
# box mostly outside the frame clips to a sliver; its crop would be a line of pixels): dropped before ranking
MIN_BOX_SIDE = 2.0
SMALL_BACKBONES = {  # random-init ResNets with basic blocks (keras-hub needs 64 filters in the stem and stack 1)
    "resnet_small": ([64, 64, 128, 128], [1, 1, 1, 1]),
    "resnet18": ([64, 128, 256, 512], [2, 2, 2, 2]),
}


def resolve_detect_config(cfg: DetectConfig) -> DetectConfig:
    """Fill every 'auto' value so config.json says exactly what ran; refuse what cannot run."""
    from ncfm import runtime

    pretrained = cfg.weights != "none"
    if cfg.backbone not in ("resnet50", *SMALL_BACKBONES):
        raise NcfmError(f"received backbone={cfg.backbone!r}; use resnet50, resnet18 or resnet_small")
    if pretrained and cfg.backbone != "resnet50":
        raise NcfmError(f"--backbone {cfg.backbone} has no pretrained weights; use --weights none, or "
                        f"--backbone resnet50")
    if cfg.image_size < 64 or cfg.image_size % 32:
        raise NcfmError(f"received image_size={cfg.image_size}; the detector needs a multiple of 32, at least 64")
    if cfg.epochs < 1 or cfg.batch_size < 0:
        raise NcfmError(f"need epochs >= 1 and batch_size >= 1 (0 = auto); received epochs={cfg.epochs}, "
                        f"batch_size={cfg.batch_size}")
    if pretrained and cfg.weights not in PRESETS and not Path(cfg.weights).is_dir():
        raise NcfmError(f"--weights {cfg.weights}: not coco, imagenet, none or a folder; pass the folder of a "
                        f"downloaded keras-hub preset (it holds config.json and model.weights.h5)")
    return dataclasses.replace(cfg, lr=cfg.lr or (1e-4 if pretrained else 1e-3),
                               batch_size=cfg.batch_size or auto_batch_size(runtime.accelerator_memory_gib(),
                                                                            cfg.image_size),
                               mixed_precision=checked(runtime.resolve_precision, cfg.mixed_precision))


# auto batch: about this much accelerator memory per training image at 512 px (ResNet-50 FPN, with
# activations for the backward pass), scaling with the pixels; at batch 8 an H200 trained at 179
# images/s and sat mostly idle
GIB_PER_IMAGE_AT_512 = 1.0


def auto_batch_size(memory_gib: float | None, image_size: int) -> int:
    """Images per detector training step: 8 on a CPU (memory None), else the largest power of two
    that memory holds at GIB_PER_IMAGE_AT_512 scaled by the pixels, between 8 and 64."""
    if not memory_gib:
        return 8
    fits = memory_gib / (GIB_PER_IMAGE_AT_512 * (image_size / 512) ** 2)
    return int(min(64, max(8, 2 ** math.floor(math.log2(max(fits, 1))))))


# ----------------------------------------------------------------------------- boxes as numbers
def auto_anchor_size(sides: np.ndarray) -> float:
    """Anchor size (in P3 strides) whose smallest anchors fit the smallest tenth of the boxes."""
    if not len(sides):
        return 4.0
    return float(np.clip(np.percentile(sides, 10) / 8.0, 1.0, 4.0))


def image_sizes(data_dir: Path, images) -> np.ndarray:
    """(N, 2) width, height of each image, read from the file headers (no pixels decoded)."""
    from PIL import Image

    out = np.zeros((len(images), 2), "float64")
    for i, name in enumerate(images):
        try:
            with Image.open(data_dir / name) as im:
                out[i] = im.size
        except OSError as e:
            raise NcfmError(f"{data_dir / name}: cannot read the image ({e}); remove it or fix it, then "
                            f"rerun `ncfm split_train_val --force`") from None
    return out


def to_input(boxes: np.ndarray, wh: np.ndarray, size: int) -> np.ndarray:
    """xywh boxes in original pixels -> in the squashed size x size input."""
    scale = np.concatenate([size / wh, size / wh], axis=-1)
    return boxes * scale


def to_original(boxes: np.ndarray, wh: np.ndarray, size: int) -> np.ndarray:
    scale = np.concatenate([wh / size, wh / size], axis=-1)
    return boxes * scale


# ----------------------------------------------------------------------------- the model
def build_detector(cfg: DetectConfig, anchor_size: float, steps: int):
    """A one-class RetinaNet, compiled for `steps` training steps of cosine-decayed Adam; returns
    (model, pixel scale, pixel offset): the backbone's input scaling."""
    import keras_hub

    shape = (cfg.image_size, cfg.image_size, 3)
    scale, offset = 1.0 / 255.0, 0.0
    if cfg.weights == "none":
        filters, blocks = SMALL_BACKBONES.get(cfg.backbone, ([64, 128, 256, 512], [3, 4, 6, 3]))
        encoder = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=filters,
            stackwise_num_blocks=blocks, stackwise_num_strides=[1, 2, 2, 2],
            block_type="bottleneck_block" if cfg.backbone == "resnet50" else "basic_block",
            use_pre_activation=False, image_shape=shape)
        backbone = _pyramid(encoder, shape)
    else:
        preset = PRESETS.get(cfg.weights, cfg.weights)
        try:
            loaded = keras_hub.models.Backbone.from_preset(preset)
            converter = keras_hub.layers.ImageConverter.from_preset(preset)
        except Exception as e:  # no network, a wrong folder: many exception types
            raise NcfmError(f"--weights {cfg.weights}: cannot load the keras-hub preset {preset!r} ({type(e).__name__}: "
                            f"{e}). Offline, download it once elsewhere (keras_hub.models.Backbone.from_preset"
                            f"({preset!r}) saves it under ~/.cache/kagglehub) and pass that folder, or use "
                            f"--weights none") from None
        scale, offset = _converter_scaling(converter)
        if isinstance(loaded, keras_hub.models.RetinaNetBackbone):
            # the pretrained FPN and ResNet, rebuilt for this input size
            backbone = _pyramid(loaded.image_encoder, shape, weights_from=loaded)
        else:
            backbone = _pyramid(loaded, shape)
    anchors = keras_hub.layers.AnchorGenerator(
        BOX_FORMAT, min_level=backbone.min_level, max_level=backbone.max_level, num_scales=3,
        aspect_ratios=[0.5, 1.0, 2.0], anchor_size=anchor_size)
    decoder = keras_hub.layers.NonMaxSuppression(
        bounding_box_format=BOX_FORMAT, from_logits=True, iou_threshold=0.5,
        confidence_threshold=min(cfg.min_score, 0.001), max_detections=max(cfg.max_boxes, 1))
    # IoU 0.4 makes an anchor a positive (RetinaNet: 0.5): a small fish overlaps few anchors well
    # (the encoder is not in keras-hub's public API; the detector builds the same class by default)
    from keras_hub.src.models.retinanet.retinanet_label_encoder import (
        RetinaNetLabelEncoder,
    )

    encoder = RetinaNetLabelEncoder(anchor_generator=anchors, bounding_box_format=BOX_FORMAT,
                                    encoding_format="center_xywh", positive_threshold=0.4, negative_threshold=0.3)
    model = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=1, bounding_box_format=BOX_FORMAT, anchor_generator=anchors,
        label_encoder=encoder, pre_logits_num_conv_layers=cfg.head_convs, prediction_decoder=decoder)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=max(1, steps * cfg.epochs), alpha=0.01)
    # clipped: a random box head's first steps give losses in the hundreds, which wreck the features
    # (under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer: auto_scale_loss)
    model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=10.0), auto_scale_loss=True)
    return model, scale, offset


def _pyramid(encoder, shape, weights_from=None):
    import keras_hub

    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3, max_level=7,
                                                  use_p5=False, image_shape=shape)
    if weights_from is not None:
        backbone.set_weights(weights_from.get_weights())
    return backbone


def _converter_scaling(converter) -> tuple[float, float]:
    """The preset's pixel scaling as one (scale, offset) pair (per-channel values averaged)."""
    scale = np.mean(np.asarray(converter.scale if converter.scale is not None else 1.0, "float64"))
    offset = np.mean(np.asarray(converter.offset if converter.offset is not None else 0.0, "float64"))
    return float(scale), float(offset)


# ----------------------------------------------------------------------------- batches
def padded_targets(boxes_per_image: list[np.ndarray], n_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged boxes -> ((N, n_max, 4) boxes, (N, n_max) labels) with -1 padding (RetinaNet's 'none')."""
    n = len(boxes_per_image)
    boxes = np.full((n, n_max, 4), -1.0, "float32")
    labels = np.full((n, n_max), -1.0, "float32")
    for i, b in enumerate(boxes_per_image):
        k = min(len(b), n_max)
        boxes[i, :k] = b[:k]
        labels[i, :k] = FISH
    return boxes, labels


def flip(x: np.ndarray, boxes: np.ndarray, labels: np.ndarray, horizontal: bool, vertical: bool):
    """Flip one image (H, W, 3) and its xywh boxes; padding rows (label -1) stay as they are."""
    size_y, size_x = x.shape[:2]
    boxes = boxes.copy()
    real = labels >= 0
    if horizontal:
        x = x[:, ::-1]
        boxes[real, 0] = size_x - boxes[real, 0] - boxes[real, 2]
    if vertical:
        x = x[::-1]
        boxes[real, 1] = size_y - boxes[real, 1] - boxes[real, 3]
    return x, boxes


def detector_batches(pixels, rows, boxes, labels, batch_size, scale, offset, train=False, seed=0,
                     hflip=False, vflip=False, start_epoch=0):
    """A keras PyDataset of (float pixels, {"boxes", "labels"}); training batches are shuffled and
    flipped by a generator fixed by (seed, epoch), so a resumed epoch sees what it would have."""
    from ncfm.batches import read_rows

    rows = np.asarray(rows)
    n_batches = len(rows) // batch_size if train else math.ceil(len(rows) / batch_size)

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = start_epoch

        def __len__(self):
            return n_batches

        def on_epoch_end(self):
            self.epoch += 1

        def __getitem__(self, i):
            if train:
                rng = np.random.default_rng([seed, self.epoch])
                order = rng.permutation(len(rows))
                pick = order[i * batch_size:(i + 1) * batch_size]
                flips = np.random.default_rng([seed, self.epoch, i]).random((len(pick), 2))
            else:
                pick = np.arange(i * batch_size, min((i + 1) * batch_size, len(rows)))
            x = read_rows(pixels, rows[pick]).astype("float32")
            b, lab = boxes[pick].copy(), labels[pick]
            if train:
                for j in range(len(pick)):
                    x[j], b[j] = flip(x[j], b[j], lab[j], hflip and flips[j, 0] < 0.5, vflip and flips[j, 1] < 0.5)
            x = x * scale + offset
            return x, {"boxes": b, "labels": lab}

    return Batches()


def find_boxes(model, pixels, images, wh, cfg: DetectConfig, scale: float, offset: float,
               batch_size: int = 16) -> pd.DataFrame:
    """Found boxes of `images`: image, rank, score, x, y, width, height (original pixels).

    Every image gets at least one row: its best box whatever its score, or NaNs when the
    detector returned nothing."""
    from ncfm.batches import read_rows

    out = []
    for start in range(0, len(images), batch_size):
        idx = np.arange(start, min(start + batch_size, len(images)))
        x = read_rows(pixels, idx).astype("float32") * scale + offset
        # the model then keras-hub's decoder (anchors -> boxes -> NMS), as its predict_step does
        # (which cannot take the 1-tuple batches keras.Model.predict hands it); outputs in float32,
        # as the decoder's anchors are (under mixed precision TensorFlow refuses to mix the two)
        raw = {k: keras.ops.cast(v, "float32") for k, v in model(x, training=False).items()}
        pred = model.decode_predictions(raw, x)
        found = np.asarray(pred["boxes"], "float64")
        conf = np.asarray(pred["confidence"], "float64")
        for j, i in enumerate(idx):
            keep, clipped = rank_boxes(found[j], conf[j], cfg.image_size, cfg.max_boxes, cfg.min_score)
            if not len(keep):
                out.append((images[i], 0, 0.0, np.nan, np.nan, np.nan, np.nan))
                continue
            xywh = to_original(clipped, wh[i], cfg.image_size)
            for rank, (k, box) in enumerate(zip(keep, xywh)):
                out.append((images[i], rank, float(conf[j][k]), *map(float, box)))
    return pd.DataFrame(out, columns=runs.FOUND_BOX_COLUMNS)


def rank_boxes(boxes: np.ndarray, conf: np.ndarray, size: int, max_boxes: int, min_score: float,
               min_side: float = MIN_BOX_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """One image's decoded boxes (xywh in input pixels; confidence < 0 = padding) -> (the indices
    kept, best first, and their boxes clipped to the input). Boxes thinner than `min_side` after
    clipping are dropped before ranking; then the best `max_boxes`, of which those below `min_score`
    are dropped except the best."""
    boxes = np.asarray(boxes, "float64").reshape(-1, 4)
    conf = np.asarray(conf, "float64").reshape(-1)
    clipped = _clip_input(boxes, size) if len(boxes) else boxes
    usable = (conf >= 0) & (clipped[:, 2] >= min_side) & (clipped[:, 3] >= min_side)
    keep = np.flatnonzero(usable)
    keep = keep[np.argsort(-conf[keep], kind="stable")][:max_boxes]
    keep = keep[(conf[keep] >= min_score) | (np.arange(len(keep)) == 0)]
    return keep, clipped[keep]


def _clip_input(xywh: np.ndarray, size: int) -> np.ndarray:
    x0 = np.clip(xywh[:, 0], 0, size)
    y0 = np.clip(xywh[:, 1], 0, size)
    x1 = np.clip(xywh[:, 0] + xywh[:, 2], 0, size)
    y1 = np.clip(xywh[:, 1] + xywh[:, 3], 0, size)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


# ----------------------------------------------------------------------------- the fold
@dataclass
class DetectData:
    """What one detector fold reads: the manifest, true boxes, which images are fish or empty."""

    manifest: pd.DataFrame
    n_folds: int
    truth: pd.DataFrame  # image,label,x,y,width,height,... (ncfm.boxes)
    boxed: set  # images with at least one box
    empty_classes: list[str]

    def fish_images(self, df):
        return [i for i in df.image if i in self.boxed]

    def empty_images(self, df):
        return list(df.image[df.label.isin(self.empty_classes)])


def read_detect_data(comp: Competition, folds_csv: Path, fold: int, boxes_csv: Path | None = None,
                     empty_class: str | None = None) -> DetectData:
    from ncfm.folds import read_manifest
    from ncfm.boxes import boxes_path, read_boxes

    manifest, n_folds = read_manifest(folds_csv, fold, comp.classes)
    boxes_csv = Path(boxes_csv) if boxes_csv else boxes_path(folds_csv)
    if not boxes_csv.is_file():
        raise NcfmError(f"{boxes_csv}: no boxes manifest; run `ncfm boxes` first (it reads the community's "
                        f"*_labels.json box files from {boxes_csv.parent / 'boxes'}/)")
    truth = read_boxes(boxes_csv)
    truth = truth[truth.image.isin(set(manifest.image))]
    if truth.empty:
        raise NcfmError(f"{boxes_csv}: none of its boxes is on an image of {folds_csv}; rerun `ncfm boxes`")
    return DetectData(manifest, n_folds, truth, set(truth.image), empty_classes(comp, truth, empty_class))


def empty_classes(comp: Competition, truth: pd.DataFrame, empty_class: str | None = None) -> list[str]:
    """The class(es) whose images hold no object (NCFM: NoF): named, or the one class without boxes."""
    if empty_class:
        if empty_class not in comp.classes:
            raise NcfmError(f"received --empty-class {empty_class!r}; the classes are {', '.join(comp.classes)}")
        return [empty_class]
    without = [c for c in comp.classes if c not in set(truth.label)]
    if len(without) != 1:
        raise NcfmError(f"cannot tell which class means 'no fish': classes without boxes are "
                        f"{without or 'none'}; pass --empty-class NAME")
    return without


def detect_fold(cfg: DetectConfig, comp: Competition, data_dir: Path, folds_csv: Path, fold: int,
                run_dir: Path, boxes_csv: Path | None = None, empty_class: str | None = None,
                retrain: bool = False) -> dict:
    """Train (or resume, or skip if finished) one detector fold; returns its state."""
    target = runs.fold_of(run_dir, fold)
    with runs.fold_lock(target), runs.replacing(target, retrain):
        return _detect_fold(cfg, comp, data_dir, folds_csv, target, boxes_csv, empty_class)


def _detect_fold(cfg, comp, data_dir, folds_csv, fold: runs.Fold, boxes_csv, empty_class) -> dict:
    from ncfm import runtime
    from ncfm.cache import load_images

    # Everything that can be refused is refused before a file is written.
    data = read_detect_data(comp, folds_csv, fold.index, boxes_csv, empty_class)
    requested_precision, cfg = cfg.mixed_precision, resolve_detect_config(cfg)
    precision_reason = runtime.choose_precision(requested_precision)[1]  # config.json says why
    manifest, images = data.manifest, list(data.manifest.image)
    split = split_digest(manifest)
    state, history = open_fold(fold, cfg, runs.DETECTOR, split, folds_csv)
    if state["finished"]:
        return state
    wh = image_sizes(data_dir, images)
    targets, labels, anchor_size = _training_targets(data, images, wh, cfg)
    train_rows, val_rows, held_out = _detector_rows(data, fold.index, folds_csv)

    with to_fold_log(fold):
        runtime.setup(cfg.seed + fold.index, cfg.mixed_precision, False)
        runs.write_config(fold, dataclasses.asdict(cfg) | dict(
            kind=runs.DETECTOR, fold=fold.index, n_folds=data.n_folds, folds_csv=str(folds_csv), split=split,
            data_dir=str(data_dir), classes=list(comp.classes), empty_classes=data.empty_classes,
            anchor_size_used=anchor_size, competition=comp.slug, backend=runtime.backend(),
            accelerator=runtime.accelerator(), precision_reason=precision_reason))
        say(f"detector fold {fold.index}/{data.n_folds}: {len(train_rows)} train, {len(val_rows)} validation images "
            f"({len(data.fish_images(manifest.iloc[train_rows]))} with fish boxes, "
            f"{len(data.empty_images(manifest.iloc[train_rows]))} {'/'.join(data.empty_classes)} in training); "
            f"RetinaNet {cfg.backbone} at {cfg.image_size}px, weights={cfg.weights}, anchors {anchor_size:.2f}; "
            f"{runtime.describe()}; {cfg.mixed_precision}: {precision_reason}")

        pixels = load_images(data_dir, images, cfg.image_size, cache_dir=cfg.cache_dir or None, workers=cfg.workers)
        batch = min(cfg.batch_size, len(train_rows))
        keras.utils.set_random_seed(cfg.seed + fold.index)
        model, scale, offset = build_detector(cfg, anchor_size, steps=len(train_rows) // batch)
        if state["epoch"] > 0:
            say(resuming_line(state))
            # the same model again, then last.keras' weights and optimizer state (keras-hub's compile
            # is custom, so keras.saving.load_model would not restore the optimizer)
            model.optimizer.build(model.trainable_variables)
            runs.check_checkpoint(fold.last, f"`ncfm detect --fold {fold.index} --run {fold.run} --retrain` starts it again")
            model.load_weights(fold.last)
        runs.write_config(fold, runs.read_config(fold) | dict(pixel_scale=scale, pixel_offset=offset))
        checkpoint = DetectorCheckpoint(fold, state, history, cfg)
        started = time.time()
        if state["epoch"] < cfg.epochs and not state.get("stopped_early"):
            train_data = detector_batches(pixels, train_rows, targets[train_rows], labels[train_rows], batch, scale,
                                          offset, train=True, seed=cfg.seed * 1000 + fold.index, hflip=cfg.hflip,
                                          vflip=cfg.vflip, start_epoch=state["epoch"])
            val_data = detector_batches(pixels, val_rows, targets[val_rows], labels[val_rows], batch, scale, offset)
            # keras.Model's own fit: keras-hub's wraps inputs in tf.data (TensorFlow only, no PyDataset);
            # there is no keras-hub preprocessor here to run (pixels are scaled by the batches)
            keras.Model.fit(model, train_data, epochs=cfg.epochs, initial_epoch=state["epoch"],
                            validation_data=val_data, callbacks=[checkpoint], verbose=1 if sys.stdout.isatty() else 2)
        return _score_detector(cfg, data, fold, state, pixels, images, wh, held_out, scale, offset, started)


def _training_targets(data: DetectData, images: list, wh: np.ndarray, cfg: DetectConfig):
    """Every image's true boxes in input pixels, padded: (targets, labels, the anchor size used)."""
    truth_rows = {name: g[["x", "y", "width", "height"]].to_numpy("float64") for name, g in data.truth.groupby("image")}
    boxes_in = [to_input(truth_rows.get(name, np.zeros((0, 4))), wh[i], cfg.image_size) for i, name in enumerate(images)]
    anchor_size = cfg.anchor_size or auto_anchor_size(
        np.concatenate([np.sqrt(b[:, 2] * b[:, 3]) for b in boxes_in if len(b)]))
    targets, labels = padded_targets(boxes_in, max(1, max(len(b) for b in boxes_in)))
    return targets, labels, anchor_size


def _detector_rows(data: DetectData, fold: int, folds_csv: Path):
    """(training rows, validation rows, held-out rows) of the manifest: boxed or empty images train and
    validate; every held-out image gets found boxes."""
    manifest = data.manifest
    empty = set(data.empty_images(manifest))
    usable = np.array([name in data.boxed or name in empty for name in manifest.image])
    in_fold = (manifest.fold == fold).to_numpy()
    train_rows, val_rows = np.flatnonzero(usable & ~in_fold), np.flatnonzero(usable & in_fold)
    if not len(val_rows) or not len(train_rows):
        raise NcfmError(f"{folds_csv}: fold {fold} leaves no boxed or empty images to "
                        f"{'validate' if not len(val_rows) else 'train'} on; check `ncfm boxes`' report")
    return train_rows, val_rows, np.flatnonzero(in_fold)


def _score_detector(cfg, data: DetectData, fold: runs.Fold, state: dict, pixels, images, wh, held_out, scale,
                    offset, started: float) -> dict:
    """best.keras on the held-out images: oof_boxes.csv and the detection quality in state.json."""
    best = load_detector(fold)
    found = find_boxes(best, _rows(pixels, held_out), [images[i] for i in held_out], wh[held_out], cfg, scale, offset)
    runs.write_found_boxes(fold.oof_boxes, found)
    val_df = data.manifest.iloc[held_out]
    quality = detection_quality(found, data.truth[data.truth.image.isin(set(val_df.image))],
                                data.fish_images(val_df), data.empty_images(val_df))
    state.update(finished=True, train_seconds=round(time.time() - started + state.get("train_seconds", 0), 1),
                 **{f"oof_{k}": v for k, v in quality.items()})
    runs.write_state(fold, state)
    say(f"detector fold {fold.index} done: best epoch {state['best_epoch']}, val_loss {state['best_val_loss']:.4f}; "
        f"OOF {describe_quality(quality)} -> {fold.oof_boxes}")
    return state


def load_detector(fold: runs.Fold):
    """A detector fold's best.keras, ready to find boxes."""
    import warnings

    import keras_hub  # noqa: F401 - registers the RetinaNet classes that the file names

    with warnings.catch_warnings():  # "compile() was not called": not needed to find boxes
        warnings.simplefilter("ignore", UserWarning)
        return runs.load_model(fold.best, f"`ncfm detect --fold {fold.index} --run {fold.run} --retrain` "
                                          f"trains it again", compile=False)


class _rows:
    """Index a cache by a list of row numbers lazily (no copy of the held-out pixels)."""

    def __init__(self, pixels, rows):
        self.pixels, self.rows = pixels, np.asarray(rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.pixels[self.rows[index]]


def describe_quality(q: dict) -> str:
    return (f"recall@0.5 {q['recall@0.5']:.3f}, best-box IoU {q['best_iou']:.3f}, top-1 hit {q['top1@0.5']:.3f}, "
            f"fish/no-fish AUC {q['fish_auc']:.3f} ({q['boxed_images']} boxed images, {q['true_boxes']} boxes)")


def find_test_boxes(run_dir: Path, fold: int, data_dir: Path, comp: Competition, stage: int | None = None,
                    force: bool = False, cache_dir=None) -> tuple[Path, pd.DataFrame]:
    """A finished detector fold's boxes for one stage's test images (written once, then read back,
    and found again when the test images are others); `image` is the test file's path relative to
    data_dir. Decoded pixels go to `cache_dir` (default: the fold's own cache_dir setting)."""
    from ncfm.cache import load_images
    from ncfm.dataset import find_test_images

    target = runs.fold_of(run_dir, fold)
    config = runs.read_config(target)
    if config is None or runs.kind_of(config) != runs.DETECTOR or not runs.is_finished(target):
        raise NcfmError(f"{target.dir}: not a finished detector fold; run `ncfm detect --fold {fold} --run {run_dir}`")
    stage = stage if stage is not None else comp.default_stage
    path = target.test_boxes(stage)
    tests, _ = find_test_images(data_dir, stage, comp)
    if path.is_file() and not force:
        found = runs.read_found_boxes(path)
        if set(found.image) == set(tests.path):
            return path, found
    cfg = DetectConfig(**{k: config[k] for k in DetectConfig.field_names() if k in config})
    model = load_detector(target)
    pixels = load_images(data_dir, list(tests.path), cfg.image_size, cache_dir=cache_dir or cfg.cache_dir or None,
                         workers=cfg.workers)
    wh = image_sizes(data_dir, list(tests.path))
    found = find_boxes(model, pixels, list(tests.path), wh, cfg, config["pixel_scale"], config["pixel_offset"])
    runs.write_found_boxes(path, found)
    return path, found


@dataclass
class RunBoxes:
    """What a finished detector run hands the crop classifier (ncfm.crops.build_crop_set)."""

    manifest: pd.DataFrame   # the folds the detector was trained on
    truth: pd.DataFrame      # the true boxes (boxes.csv)
    found_oof: dict          # fold -> its boxes on its held-out training images
    found_test: dict         # (stage, fold) -> its boxes on the stage's test images
    empty_classes: list      # classes without fish (NoF)


def run_boxes(detector_run: Path, data_dir: Path, comp: Competition) -> RunBoxes:
    """The boxes of a finished detector run: every fold's out-of-fold boxes and its boxes on each test
    stage (found now when not yet written), with the true boxes and the folds they belong to."""
    from ncfm.folds import read_manifest
    from ncfm.boxes import boxes_path, read_boxes

    detector_run = Path(detector_run)
    folds = runs.all_folds(detector_run)
    configs = [runs.read_config(f) for f in folds]
    if not folds or any(c is None or runs.kind_of(c) != runs.DETECTOR for c in configs):
        raise NcfmError(f"{detector_run}: not a detector run (no fold<K>/config.json of `ncfm detect`); "
                        f"train one with `ncfm detect --fold K --run {detector_run}`")
    folds_csv = Path(configs[0]["folds_csv"])
    manifest, n_folds = read_manifest(folds_csv, classes=comp.classes)
    unfinished = [f.name for f in folds if not runs.is_finished(f)]
    missing = sorted(set(range(n_folds)) - {f.index for f in folds})
    if unfinished or missing:
        todo = [int(n[4:]) for n in unfinished] + missing
        raise NcfmError(f"{detector_run}: crops need every detector fold finished; still to train: fold(s) "
                        f"{', '.join(map(str, sorted(todo)))} (`ncfm detect --fold K --run {detector_run}`)")
    found_oof = {f.index: runs.read_found_boxes(f.oof_boxes) for f in folds}
    found_test = {}
    for stage in comp.stages or [None]:
        for f in folds:
            _, found = find_test_boxes(detector_run, f.index, Path(data_dir), comp, stage)
            found_test[(stage if stage is not None else 1, f.index)] = found
    return RunBoxes(manifest, read_boxes(boxes_path(folds_csv)), found_oof, found_test, configs[0]["empty_classes"])


# ----------------------------------------------------------------------------- per epoch
class DetectorCheckpoint(FoldCheckpoint):
    """ncfm.fold's per-epoch bookkeeping (history, best on val_loss, early stopping, NaN stop,
    atomic best/last flushed at most every checkpoint_seconds) for a detector: one phase, no
    accuracy, best.keras the detector itself; no patience counted in the first third of the
    epochs (from scratch the loss swings up before it falls)."""

    history_columns = runs.DETECT_HISTORY_COLUMNS
    lr_flags = "--lr"

    def history_row(self, epoch: int, logs: dict, seconds: float) -> dict:
        return dict(epoch=epoch + 1, loss=float(logs.get("loss", np.nan)), val_loss=float(logs.get("val_loss", np.nan)),
                    learning_rate=self.lr, seconds=round(seconds, 3))

    def progress_line(self, row: dict) -> str:
        return (f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  val_loss {row['val_loss']:.4f}  "
                f"lr {self.lr:.2e}  {row['seconds']:.1f}s")

    def counts_patience(self, epoch: int) -> bool:
        return epoch + 1 > self.cfg.epochs // 3

    def save_best(self, record: dict) -> None:
        runs.save_model(self.model, self.fold.best, record=record)


# ----------------------------------------------------------------------------- command
def main(args) -> int:
    from ncfm.folds import folds_csv_path
    from ncfm.config import make_config
    from ncfm.dataset import competition_for

    overrides = {name: getattr(args, name) for name in DetectConfig.field_names()}
    cfg = make_config(args.config, settings=DetectConfig, **overrides)
    data_dir = Path(args.data_dir)
    folds_csv = folds_csv_path(data_dir, args.folds_csv)
    comp = competition_for(data_dir, folds_csv)
    detect_fold(cfg, comp, data_dir, folds_csv, args.fold, Path(args.run), boxes_csv=args.boxes_csv,
                empty_class=args.empty_class, retrain=args.retrain)
    if args.test:
        for stage in comp.stages or [None]:
            path, found = find_test_boxes(Path(args.run), args.fold, data_dir, comp, stage)
            say(f"test boxes{'' if stage is None else f' (stage {stage})'}: {found.image.nunique()} images -> {path}")
    return 0
