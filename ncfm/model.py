"""Backbones, preprocessing inside the model, the new 8-way head, and freezing for phase 1.

A model built here takes raw uint8 pixels (B, S, S, 3) and does everything else itself:

    uint8 -> RandomAugment (training only) -> "classifier": Preprocess -> backbone -> pool
          -> dropout -> Dense(8, softmax, float32)

The classifier is a nested model so prediction can wrap it with test-time views
(`build_tta_model`) and phase 1 can freeze just its backbone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import ops

from ncfm import CLASSES, NcfmError
from ncfm.augment import GroupViews, RandomAugment, TTAViews


@dataclass(frozen=True)
class Backbone:
    factory: str  # name in keras.applications
    size: int  # native input size
    min_size: int  # smallest input the architecture accepts
    preprocessing: str  # "tf" [-1, 1], "caffe" BGR mean, "torch" ImageNet mean/std, "raw" [0, 255]
    weights_file: str  # the no-top ImageNet file Keras downloads to ~/.keras/models


BACKBONES = {
    "inception_v3": Backbone("InceptionV3", 299, 75, "tf",
                             "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "xception": Backbone("Xception", 299, 71, "tf", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "inception_resnet_v2": Backbone("InceptionResNetV2", 299, 75, "tf",
                                    "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet50": Backbone("ResNet50", 224, 32, "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "densenet121": Backbone("DenseNet121", 224, 32, "torch",
                            "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "efficientnetv2_b0": Backbone("EfficientNetV2B0", 224, 32, "raw", "efficientnetv2-b0_notop.h5"),
    "efficientnetv2_s": Backbone("EfficientNetV2S", 384, 32, "raw", "efficientnetv2-s_notop.h5"),
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise NcfmError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


@keras.saving.register_keras_serializable(package="ncfm")
class Preprocess(keras.layers.Layer):
    """Pixels in [0, 255] -> the backbone's expected input scale."""

    MEANS = {"caffe": (103.939, 116.779, 123.68), "torch": (0.485, 0.456, 0.406)}
    STDS = {"torch": (0.229, 0.224, 0.225)}

    def __init__(self, mode="tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe", "torch", "raw"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(self.MEANS["caffe"], self.compute_dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(self.MEANS["torch"], self.compute_dtype)
            std = ops.convert_to_tensor(self.STDS["torch"], self.compute_dtype)
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"mode": self.mode}


def resolve_weights(weights: str, backbone: Backbone):
    """'imagenet' | 'none' | a path -> what keras.applications takes, with errors a user can act on."""
    if weights in (None, "", "none", "None"):
        return None
    if weights == "imagenet":
        cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / backbone.weights_file
        return str(cached) if cached.is_file() else "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise NcfmError(f"--weights {weights}: file not found; pass imagenet, none, or the path to "
                        f"{backbone.weights_file} (the no-top ImageNet weights)")
    return str(path)


def _make_backbone(spec: Backbone, size: int, weights):
    factory = getattr(keras.applications, spec.factory)
    kwargs = dict(include_top=False, weights=weights, input_shape=(size, size, 3))
    if spec.preprocessing == "raw":
        kwargs["include_preprocessing"] = True
    try:
        return factory(**kwargs)
    except Exception as e:  # download failures surface as several exception types
        if weights == "imagenet":
            raise NcfmError(
                f"could not download ImageNet weights for {spec.factory} ({type(e).__name__}: {e}). "
                f"On an offline machine, copy {spec.weights_file} (from the keras-applications "
                f"releases, or a Kaggle dataset) and pass --weights PATH, or --weights none") from e
        if isinstance(weights, str):
            raise NcfmError(f"--weights {weights}: could not load into {spec.factory} without top "
                            f"({type(e).__name__}: {e}); it must be the no-top file {spec.weights_file}") from e
        raise


def build_model(backbone: str = "inception_v3", weights: str = "none", image_size: int = 0,
                dropout: float = 0.5, augment: dict | None = None, seed: int | None = None,
                num_classes: int = len(CLASSES)) -> keras.Model:
    """The full training model: uint8 input, augmentation, classifier (see module docstring)."""
    spec = get_backbone(backbone)
    size = image_size or spec.size
    if size < spec.min_size:
        raise NcfmError(f"image_size={size} is too small for {backbone}; its minimum is {spec.min_size}")
    base = _make_backbone(spec, size, resolve_weights(weights, spec))
    base.name = "backbone"  # fixed name so freezing and unfreezing find it in any backbone

    pixels = keras.Input((size, size, 3), name="pixels")
    x = Preprocess(spec.preprocessing, name="preprocess")(pixels)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    # its own stream: with the augmentation's seed the flip coins would track the first dropout units
    x = keras.layers.Dropout(dropout, seed=None if seed is None else seed + 1, name="dropout")(x)
    probs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)
    classifier = keras.Model(pixels, probs, name="classifier")

    raw = keras.Input((size, size, 3), dtype="uint8", name="image")
    augmented = RandomAugment(**(augment or {}), seed=seed, name="augment")(raw)
    return keras.Model(raw, classifier(augmented), name=f"ncfm_{backbone}")


def classifier_of(model: keras.Model) -> keras.Model:
    return model.get_layer("classifier")


def backbone_of(model: keras.Model) -> keras.Model:
    return classifier_of(model).get_layer("backbone")


def freeze_backbone(model: keras.Model) -> None:
    """Phase 1: the backbone is not trained and its BatchNorm runs in inference mode."""
    backbone_of(model).trainable = False


def unfreeze_backbone(model: keras.Model, from_layer: str = "", freeze_bn: bool = True,
                      bn_momentum: float = 0.0) -> int:
    """Phase 2: train the backbone from `from_layer` on (all of it when empty).

    With pretrained weights BatchNorm stays frozen (inference mode, fixed statistics), as the
    Keras fine-tuning guide recommends; a randomly initialised backbone needs it trainable.
    A short from-scratch run also needs BatchNorm's moving statistics to follow the weights
    faster than Keras' default momentum of 0.99 allows (`bn_momentum`, 0 keeps it).
    Returns the number of trainable weight tensors.
    """
    base = backbone_of(model)
    base.trainable = True
    names = [layer.name for layer in base.layers]
    if from_layer:
        if from_layer not in names:
            blocks = [n for n in names if n.startswith(("mixed", "block", "conv", "stage"))]
            raise NcfmError(f"--unfreeze-from {from_layer}: no such layer in the backbone; "
                            f"e.g. {', '.join(blocks[-12:])}")
        start = names.index(from_layer)
        for layer in base.layers[:start]:
            layer.trainable = False
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if freeze_bn:
                layer.trainable = False
            elif bn_momentum:
                layer.momentum = bn_momentum
    return len(model.trainable_weights)


def build_tta_model(model: keras.Model, views) -> keras.Model:
    """uint8 (B, S, S, 3) -> per-view probabilities (B, V, 8), all views in one forward pass."""
    classifier = classifier_of(model)
    size = classifier.input_shape[1]
    raw = keras.Input((size, size, 3), dtype="uint8", name="image")
    x = TTAViews(views, name="views")(raw)
    probs = classifier(x)
    out = GroupViews(len(views), name="per_view")(probs)
    return keras.Model(raw, out, name="tta")


def inference_model(model: keras.Model) -> keras.Model:
    """uint8 pixels -> the classifier, without augmentation; shares the training model's layers."""
    classifier = classifier_of(model)
    raw = keras.Input(classifier.input_shape[1:], dtype="uint8", name="image")
    return keras.Model(raw, classifier(raw), name=model.name)
