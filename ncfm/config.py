"""One source of defaults: each family's settings dataclass (TrainConfig for `ncfm train`,
DetectConfig for `ncfm detect`), config files, resolved JSON.

Precedence: dataclass defaults < config file (TOML, or YAML when PyYAML is installed)
< command-line flags. Each family resolves its 'auto' values (train.resolve_train_config,
detect.resolve_detect_config) and writes the result to the fold's config.json.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

from ncfm import NcfmError


def setting(default, help: str):
    """A settings field with the sentence `--help` shows for its flag."""
    return field(default=default, metadata={"help": help})


PRECISION_HELP = ("off, bfloat16 or float16; auto = bfloat16 where the hardware computes it natively "
                  "(GPUs of compute capability 8.0 or more, TPUs, CPUs with AMX or AVX512_BF16 under "
                  "TensorFlow), float16 with loss scaling on older GPUs (T4, P100, V100), float32 "
                  "elsewhere; config.json records the choice and why")


@dataclass
class TrainConfig:
    recipe: str = setting("classic", "classic (the settings below as they are) or modern (the additions below that "
                          "won the ablation on real photos, docs/recipe.md, applied where neither a flag nor the "
                          "config file sets them: today --precise-bn 2048, the only one that beat classic on "
                          "Fashion-MNIST's test images); config.json records it")
    # model
    backbone: str = setting("inception_v3", "a keras.applications backbone: inception_v3, xception, "
                            "inception_resnet_v2, resnet50, densenet121, efficientnetv2_b0/b1/b2/b3/s/m/l (native "
                            "224/240/260/300/384/480/480 px), convnext_tiny/small/base (224 px)")
    weights: str = setting("imagenet", "imagenet (downloads once to ~/.keras/models), none (random "
                           "initialisation: tests and the demo), or the path to the backbone's no-top weights file")
    image_size: int = setting(0, "square input size in pixels; 0 = the backbone's own (299 for InceptionV3)")
    dropout: float = setting(0.5, "dropout before the new softmax head")
    # schedule: phase 1 trains the head on a frozen backbone; phase 2 fine-tunes
    epochs: int = setting(25, "epochs in all, both phases")
    head_epochs: int = setting(3, "phase-1 epochs: only the new head trains, on a frozen backbone")
    batch_size: int = setting(32, "images per training step")
    optimizer: str = setting("auto", "sgd (Nesterov), adam or adamw; auto = sgd with pretrained weights, "
                             "adam from scratch (sgd diverges on a random InceptionV3)")
    momentum: float = setting(0.9, "SGD momentum")
    head_lr: float = setting(0.0, "phase-1 learning rate; 0 = auto: 1e-2 for sgd, 1e-3 for adam")
    lr: float = setting(0.0, "phase-2 peak learning rate, cosine-decayed to 1% of it; 0 = auto: 1e-4 "
                        "with pretrained weights, 1e-2 (sgd) / 1e-3 (adam) from scratch")
    warmup_epochs: float = setting(0.0, "linear warm-up at the start of phase 2, in epochs")
    weight_decay: float = setting(0.0, "decoupled weight decay (adamw: 0 = 1e-4)")
    label_smoothing: float = setting(0.0, "label smoothing of the training loss (0.1 softens targets to 0.9)")
    unfreeze_from: str = setting("", "phase 2 trains the backbone from this layer on (e.g. mixed7); "
                                 "empty = all of it")
    freeze_bn: str = setting("auto", "keep BatchNorm in inference mode in phase 2: true, false, or auto "
                             "(true when the weights are pretrained)")
    bn_momentum: float = setting(0.0, "BatchNorm moving-average momentum in phase 2; 0 = auto: 0.99 "
                                 "pretrained, 0.9 from scratch (statistics must follow fast-moving weights)")
    ema: float = setting(0.0, "keep an exponential moving average of the weights with this decay per step (timm's "
                         "--model-ema-decay; 0.99 to 0.9999, higher for longer runs): validation, best.keras, OOF "
                         "and predict use the averaged weights, each phase ends on them; 0 = off")
    lr_decay: float = setting(1.0, "layer-wise learning-rate decay in phase 2 (adamw; auto picks adamw): the backbone's "
                              "last stage trains at lr x this, each earlier stage at this times the next one's rate "
                              "(a stage ends where the feature map shrinks to 0.7 of its side or less); 1 = off")
    precise_bn: int = setting(0, "precise BatchNorm: after training, recompute best.keras' BatchNorm statistics as "
                              "the plain average over this many of the fold's training images (no augmentation, "
                              "the training batch size) for the weights it holds, kept where the fold's held-out "
                              "loss does not rise; OOF and predict use them. Needs BatchNorm that trains (from "
                              "scratch, or --freeze-bn false); 0 = off")
    patience: int = setting(6, "phase 2 stops after this many epochs without a lower val_loss, counted once "
                            "phase 2 has beaten the head epochs' best (a phase 2 that never does runs all its "
                            "epochs); 0 = never")
    # augmentation (training); all run inside the model, on the accelerator
    hflip: bool = setting(True, "random horizontal flips")
    vflip: bool = setting(True, "random vertical flips")
    rotation: float = setting(10.0, "random rotation, +/- degrees")
    zoom: float = setting(0.1, "random zoom, +/- fraction")
    shift: float = setting(0.1, "random shift, +/- fraction of the image size")
    shear: float = setting(5.0, "random shear, +/- degrees")
    brightness: float = setting(0.15, "random brightness, +/- fraction")
    contrast: float = setting(0.15, "random contrast, +/- fraction")
    mix: str = setting("none", "mix training batches: mixup (blend two images and their targets), cutmix (paste "
                       "a box of one into the other, targets by area), both (one of the two per batch, as timm), "
                       "none; validation images are never mixed")
    mix_alpha: float = setting(0.0, "the mixing weight's Beta(alpha, alpha); 0 = timm's 0.8 for mixup, 1.0 for cutmix")
    mix_prob: float = setting(1.0, "the share of training batches that are mixed")
    randaugment: str = setting("none", "per-image random operations after the affine and colour ones: N,M = "
                               "RandAugment (N operations, magnitude M of 10, e.g. 2,9), trivial = TrivialAugment "
                               "(one operation at a uniform random magnitude), none")
    erasing: float = setting(0.0, "random erasing: the probability that a training image gets a rectangle of "
                             "2-33% of its area filled with noise (timm's --reprob; 0.25 is common); 0 = off")
    # crops (only with `ncfm train --detector RUN`: the classifier sees the fish the detector found)
    crop_margin: float = setting(0.15, "with --detector: space around the fish box, a fraction of its longer side")
    crop_aspect: str = setting("square", "with --detector: square (fish at any angle), keep (the box's own "
                               "aspect, squashed), or pad (square, black beyond the image edge)")
    crop_jitters: int = setting(2, "with --detector: crops cut per true box for training, the first exact, "
                                "the others shifted and scaled by up to 10% like a detector's boxes")
    crop_top_boxes: int = setting(1, "with --detector: the detector's best boxes cut per image (held-out training "
                                  "images and test images); predict combines their crops weighted by score")
    crop_box_floor: float = setting(0.05, "with --detector: the score a box after the best needs to be cut")
    crop_train_misses: bool = setting(True, "with --detector: also train on the detector's held-out crops that "
                                      "miss the fish (with the image's label: they still show its boat)")
    # execution
    seed: int = setting(2016, "seed of weights, augmentation, dropout and batch order")
    deterministic: bool = setting(False, "deterministic kernels (slower; TensorFlow and torch)")
    mixed_precision: str = setting("auto", PRECISION_HELP)
    jit_compile: str = setting("auto", "XLA: on, off; auto = on with JAX, on with TensorFlow on a GPU")
    devices: str = setting("1", "devices that train this one model data-parallel: 1, all, or a number (JAX and "
                           "TensorFlow); --batch-size is then the global batch and must divide by it")
    data_on_device: bool = setting(False, "hold the whole image cache in the accelerator's memory and gather "
                                   "each training batch there: no pixels are copied from the host per step "
                                   "(JAX, one device; 268 KB per image at 299 px)")
    cache_dir: str = setting("", "where decoded images are cached; empty = <data-dir>/cache")
    workers: int = setting(0, "processes decoding images into the cache; 0 = all cores")
    tensorboard: bool = setting(True, "write TensorBoard logs to <fold>/logs (when TensorFlow is installed)")
    checkpoint_seconds: float = setting(30.0, "save last.keras/best.keras at most this often (and at "
                                        "each phase's end); an interrupted fold resumes from there")

    # settings that may change between an interrupted fold and its resumption (ncfm.fold)
    EXECUTION: ClassVar[frozenset] = frozenset({"workers", "cache_dir", "tensorboard", "jit_compile", "patience",
                                                "checkpoint_seconds", "devices", "data_on_device"})

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


@dataclass
class DetectConfig:
    """`ncfm detect`'s settings (ncfm.detect): a one-class RetinaNet for one fold."""

    weights: str = setting("coco", "coco (RetinaNet ResNet-50 FPN trained on COCO; downloads once), imagenet "
                           "(ResNet-50 backbone only), none (random: tests, the demo) or the path of a "
                           "downloaded keras-hub preset folder")
    backbone: str = setting("resnet50", "resnet50 (the presets' backbone), resnet18 or resnet_small "
                            "(random initialisation only)")
    image_size: int = setting(512, "square detector input in pixels (whole frames are squashed to it)")
    epochs: int = setting(20, "training epochs")
    batch_size: int = setting(0, "images per training step; 0 = auto: 8 on a CPU, on an accelerator as many as "
                              "its memory holds at the image size (8-64; 64 at 512 px on an 80 GB GPU)")
    lr: float = setting(0.0, "Adam learning rate; 0 = auto: 1e-4 with pretrained weights, 1e-3 from scratch")
    patience: int = setting(5, "stop after this many epochs without a lower val_loss, counted after the first "
                            "third of the epochs; 0 = never")
    anchor_size: float = setting(0.0, "anchor size in strides of the finest level (P3, stride 8); 0 = auto: "
                                 "the smallest anchors fit the smallest tenth of the training boxes")
    head_convs: int = setting(2, "convolutions in each prediction head before its output (RetinaNet: 4)")
    hflip: bool = setting(True, "random horizontal flips (image and boxes)")
    vflip: bool = setting(True, "random vertical flips (image and boxes)")
    max_boxes: int = setting(5, "boxes written per image, best first")
    min_score: float = setting(0.01, "boxes scoring below this are not written (an image always keeps its best)")
    seed: int = setting(2016, "seed of weights, flips and batch order")
    mixed_precision: str = setting("auto", PRECISION_HELP)
    cache_dir: str = setting("", "where decoded images are cached; empty = <data-dir>/cache")
    workers: int = setting(0, "processes decoding images into the cache; 0 = all cores")
    checkpoint_seconds: float = setting(30.0, "save last.keras/best.keras at most this often (and at the end)")

    # settings that may change between an interrupted fold and its resumption (ncfm.fold)
    EXECUTION: ClassVar[frozenset] = frozenset({"workers", "cache_dir", "patience", "checkpoint_seconds"})

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


@dataclass(frozen=True)
class PredictAnswer:
    """The defaults of the `ncfm predict` flags that change its answer for given runs and test images;
    predict records the values it used in calibration.json, and `ncfm notebook` replays them on Kaggle.
    weak_folds "shrink" was chosen on held-out test images of several data sets (docs/weak_folds.md)."""

    tta: int = 8
    views: str = "flips,zoom,shift"
    mean: str = "arithmetic"
    run_weights: str = "equal"
    crop_boxes: int = 0
    calibrate: str = "temperature"
    clip: float = 0.0
    weak_folds: str = "shrink"
    seed: int = 2016


def load_config_file(path: os.PathLike | str, settings=None) -> dict:
    """Read a TOML (or YAML) file of TrainConfig fields: top-level keys or a [train] table.

    Any problem (missing, unreadable or malformed file, unknown keys) is an NcfmError naming the
    file and the fix. The values' types are checked by `check_types`.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise NcfmError(f"--config {path}: config file {what}; pass the path of a TOML file of settings")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise NcfmError(f"{path}: not a text file (byte {e.start} is not UTF-8); pass a TOML file "
                        f"of settings") from None
    except OSError as e:
        raise NcfmError(f"{path}: cannot read the config file ({e.strerror or e}); check its "
                        f"permissions") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover - depends on environment
            raise NcfmError(f"{path}: YAML configs need PyYAML (pip install pyyaml); or use TOML") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e).replace("\n", " ")
            raise NcfmError(f"{path}: not valid YAML{where}: {problem}") from None
        data = {} if data is None else data
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:  # its message ends with "(at line L, column C)"
            raise NcfmError(f"{path}: not valid TOML: {e}. Settings are `name = value` lines with "
                            f'strings in quotes, e.g. backbone = "xception"') from None
    if not isinstance(data, dict):
        raise NcfmError(f"{path}: expected `name = value` settings, found a {type(data).__name__}")
    settings = settings or TrainConfig
    table = TABLES[settings.__name__]
    if table in data:  # a [train] table: everything must be in it
        outside = sorted(k for k in data if k != table)
        if outside:
            raise NcfmError(f"{path}: {', '.join(outside)} outside the [{table}] table; put every setting "
                            f"under [{table}], or drop the [{table}] line")
        data = data[table]
        if not isinstance(data, dict):
            raise NcfmError(f"{path}: {table} = {_show(data)}: expected a [{table}] table of settings")
    known = settings.field_names()
    unknown = [k for k in data if k not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = _closest(key, known)
            hints.append(f"{key!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        raise NcfmError(f"{path}: unknown setting{'s' * (len(unknown) > 1)} {', '.join(hints)}; "
                        f"the settings are the flags of `ncfm {table} --help`, with _ for -")
    return data


TABLES = {"TrainConfig": "train", "DetectConfig": "detect"}  # a config file's table for each command


def _closest(key: str, known: list[str]) -> list[str]:
    """The known names nearest to a mistyped key: the best match and any as close (hflip, vflip)."""
    key = key.replace("-", "_")
    scores = sorted(((difflib.SequenceMatcher(None, key, k).ratio(), k) for k in known), reverse=True)
    best = scores[0][0]
    return sorted(k for score, k in scores if score >= max(0.6, best - 0.05))


EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string in quotes"}


def _show(value) -> str:
    """A value as the config file spells it: "many", true, 3.5."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def check_types(values: dict, source: str, settings=None) -> dict:
    """Values (from a config file) of the types TrainConfig declares; ints are taken for floats.

    Raises an NcfmError naming `source`, each bad key, its value and the type it needs."""
    types = {f.name: str(f.type) for f in dataclasses.fields(settings or TrainConfig)}
    checked, problems = {}, []
    for key, value in values.items():
        kind = types[key]
        if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = {"int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, float),
              "bool": isinstance(value, bool),
              "str": isinstance(value, str)}[kind]
        if not ok:
            hint = ""
            if kind == "str" and isinstance(value, (bool, int, float)):  # freeze_bn = true
                hint = f' (write {key} = "{_show(value)}")'
            problems.append(f"{key} = {_show(value)}: expected {EXPECTED[kind]}{hint}")
        checked[key] = value
    if problems:
        raise NcfmError(f"{source}: " + "; ".join(problems))
    return checked


# --recipe: settings a preset changes from TrainConfig's defaults (classic: none). modern holds each
# addition that beat classic on the ablation's held-out test images (scripts/recipe_ablation.py,
# docs/recipe.md). On Fashion-MNIST from scratch (20 epochs, 600 images a fold, 75 px) only precise
# BatchNorm did, under both seeds and after every other addition; MixUp/CutMix, erasing,
# TrivialAugment, EMA (0.99, 0.95) and layer-wise decay each raised the test log loss, with or without it.
RECIPES: dict[str, dict] = {"classic": {}, "modern": {"precise_bn": 2048}}


def make_config(config_file: str | None = None, settings=None, **overrides):
    """Defaults < recipe < config file < overrides (None values in overrides are ignored), as a
    `settings` dataclass (TrainConfig unless said; ncfm.detect.DetectConfig for the detector).

    Values from the file are type-checked here; overrides come typed (argparse, or Python)."""
    settings = settings or TrainConfig
    values: dict = {}
    if config_file:
        values.update(check_types(load_config_file(config_file, settings), str(config_file), settings))
    overrides = {k: v for k, v in overrides.items() if v is not None}
    types = {f.name: f.type for f in dataclasses.fields(settings)}
    for key, value in overrides.items():
        if types[key] in ("bool", bool) and isinstance(value, str):
            overrides[key] = value.lower() in ("1", "true", "yes", "on")
    values.update(overrides)
    if settings is TrainConfig:
        recipe = values.get("recipe", TrainConfig.recipe)
        if recipe not in RECIPES:
            raise NcfmError(f"recipe must be {' or '.join(RECIPES)}; received recipe={recipe!r}")
        values = RECIPES[recipe] | values
    return settings(**values)
