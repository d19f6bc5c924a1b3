"""One source of defaults: the training settings dataclass, config files, resolved JSON.

Precedence: dataclass defaults < config file (TOML, or YAML when PyYAML is installed)
< command-line flags. The resolved values (after `resolve`) are written next to outputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ncfm.fileio import atomic_write_text


@dataclass
class TrainConfig:
    # model
    backbone: str = "inception_v3"
    weights: str = "imagenet"  # "imagenet", "none" or a path to a weights file
    image_size: int = 0  # 0 = the backbone's native size (299 for InceptionV3)
    dropout: float = 0.5
    # schedule: phase 1 trains the head on a frozen backbone; phase 2 fine-tunes
    epochs: int = 25  # total, both phases
    head_epochs: int = 3
    batch_size: int = 32
    optimizer: str = "auto"  # auto = sgd (Nesterov, momentum 0.9) when pretrained, adam from scratch; sgd, adam, adamw
    momentum: float = 0.9
    head_lr: float = 0.0  # 0 = auto: 1e-2 (sgd) / 1e-3 (adam)
    lr: float = 0.0  # 0 = auto: 1e-4 with pretrained weights, 1e-2 (sgd) / 1e-3 (adam) without
    warmup_epochs: float = 0.0  # linear warm-up at the start of phase 2
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    unfreeze_from: str = ""  # "" = the whole backbone; else a layer name (e.g. mixed5)
    freeze_bn: str = "auto"  # auto = keep BatchNorm frozen when weights are pretrained
    bn_momentum: float = 0.0  # 0 = auto: the backbone's own (0.99) when pretrained, 0.9 from scratch
    patience: int = 6  # early stopping on val_loss (phase 2), 0 = off
    # augmentation (training); all run inside the model, on the accelerator
    hflip: bool = True
    vflip: bool = True
    rotation: float = 10.0  # degrees, +/-
    zoom: float = 0.1  # +/- fraction
    shift: float = 0.1  # +/- fraction of the image size
    shear: float = 5.0  # degrees, +/-
    brightness: float = 0.15  # +/- fraction
    contrast: float = 0.15  # +/- fraction
    # execution
    seed: int = 2016
    deterministic: bool = False
    mixed_precision: str = "auto"  # auto (bf16/fp16 on GPU, off on CPU), off, bfloat16, float16
    jit_compile: str = "auto"  # auto (on for JAX, on for TF with a GPU), on, off
    cache_dir: str = ""  # "" = <data-dir>/cache
    workers: int = 0  # decoding processes, 0 = all cores
    tensorboard: bool = True
    checkpoint_seconds: float = 30.0  # flush last/best checkpoints at most this often (and per phase)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_json(self, path: os.PathLike | str, **extra) -> None:
        data = dataclasses.asdict(self) | extra
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def load_config_file(path: os.PathLike | str) -> dict:
    """Read a TOML (or YAML) file of TrainConfig fields. Unknown keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:  # pragma: no cover - depends on environment
            raise SystemExit(f"{path}: YAML configs need PyYAML (pip install pyyaml); or use TOML") from e
        data = yaml.safe_load(text) or {}
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore
        data = tomllib.loads(text)
    data = data.get("train", data)  # allow a [train] table or top-level keys
    unknown = sorted(set(data) - set(TrainConfig.field_names()))
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}; known: {TrainConfig.field_names()}")
    return data


def make_config(config_file: str | None = None, **overrides) -> TrainConfig:
    """Defaults < config file < overrides (None values in overrides are ignored)."""
    values: dict = {}
    if config_file:
        values.update(load_config_file(config_file))
    values.update({k: v for k, v in overrides.items() if v is not None})
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for key, value in values.items():
        if types[key] in ("bool", bool) and isinstance(value, str):
            values[key] = value.lower() in ("1", "true", "yes", "on")
    return TrainConfig(**values)
