"""Backbones, preprocessing inside the model, the new K-way head, and freezing for phase 1.

A model built here takes raw uint8 pixels (B, S, S, 3) and does everything else itself:

    training model:  uint8 "image" -> RandomAugment -> "classifier"
    inference model: uint8 "image" -> "classifier"
    "classifier":    preprocess -> backbone -> pool -> dropout -> Dense(K, softmax or sigmoid, float32)

The classifier is a nested model so prediction can wrap it with test-time views
(`build_tta_model`) and phase 1 can freeze just its backbone. It holds only Keras' own layers
(the preprocessing is Rescaling or a fixed Dense, see `preprocessing_layer`), so the inference
model saved as a .keras file loads with plain `keras.saving.load_model(path)` in a Python that
has never heard of ncfm. Its class names (the order of the K outputs), image size and backbone
ride inside the same zip as MODEL_INFO, which Keras ignores when loading; read them with

    json.loads(zipfile.ZipFile("best.keras").read("ncfm/model.json"))  # {"classes": [...], ...}
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ncfm import NcfmError
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
    "efficientnetv2_b1": Backbone("EfficientNetV2B1", 240, 32, "raw", "efficientnetv2-b1_notop.h5"),
    "efficientnetv2_b2": Backbone("EfficientNetV2B2", 260, 32, "raw", "efficientnetv2-b2_notop.h5"),
    "efficientnetv2_b3": Backbone("EfficientNetV2B3", 300, 32, "raw", "efficientnetv2-b3_notop.h5"),
    "efficientnetv2_s": Backbone("EfficientNetV2S", 384, 32, "raw", "efficientnetv2-s_notop.h5"),
    "efficientnetv2_m": Backbone("EfficientNetV2M", 480, 32, "raw", "efficientnetv2-m_notop.h5"),
    "efficientnetv2_l": Backbone("EfficientNetV2L", 480, 32, "raw", "efficientnetv2-l_notop.h5"),
    # ConvNeXt (2022): ImageNet mean/std inside the model (include_preprocessing), LayerNorm, no BatchNorm
    "convnext_tiny": Backbone("ConvNeXtTiny", 224, 32, "raw", "convnext_tiny_notop.h5"),
    "convnext_small": Backbone("ConvNeXtSmall", 224, 32, "raw", "convnext_small_notop.h5"),
    "convnext_base": Backbone("ConvNeXtBase", 224, 32, "raw", "convnext_base_notop.h5"),
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise NcfmError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)  # subtracted after RGB -> BGR (ResNet50)
TORCH_MEAN = (0.485, 0.456, 0.406)  # of RGB pixels in [0, 1] (DenseNet121)
TORCH_STD = (0.229, 0.224, 0.225)


def preprocessing_layer(mode: str) -> keras.layers.Layer | None:
    """Pixels in [0, 255] (uint8 or float) -> the input scale of a backbone, in Keras' own layers.

    Each layer casts its input itself, to float32 whatever the dtype policy: under mixed precision
    the backbone's first layer then rounds to bfloat16 once. Computed in bfloat16 instead, the
    rounding of every constant adds up (x / 127.5 - 1 is off by up to 0.0097 rather than 0.0019,
    as 1 / 127.5 is no bfloat16). None for "raw": EfficientNetV2 has its own preprocessing.
    """
    if mode == "tf":  # [-1, 1]
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, dtype="float32", name="preprocess")
    if mode == "torch":  # (x / 255 - mean) / std, as one multiply-add per channel
        return keras.layers.Rescaling([1 / (255 * s) for s in TORCH_STD],
                                      [-m / s for m, s in zip(TORCH_MEAN, TORCH_STD)],
                                      dtype="float32", name="preprocess")
    if mode == "caffe":
        # RGB -> BGR, then minus the BGR means: a fixed affine map of the channel axis, so a Dense
        # whose kernel is the channel permutation and whose bias is minus the means. Exact on
        # integer pixels (the kernel is 0/1). trainable=False keeps it out of every optimizer, as
        # long as nobody sets the whole classifier trainable (Keras passes that down to every
        # layer): freeze/unfreeze below only ever touch the backbone.
        layer = keras.layers.Dense(3, trainable=False, dtype="float32", name="preprocess")
        layer.build((None, None, None, 3))
        layer.set_weights([np.eye(3, dtype="float32")[::-1], -np.asarray(CAFFE_BGR_MEANS, "float32")])
        return layer
    if mode == "raw":
        return None
    raise ValueError(f"unknown preprocessing mode {mode!r}; expected tf, torch, caffe or raw")


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
                dropout: float = 0.5, augment: dict | None = None, seed: int | None = None, *,
                num_classes: int, activation: str = "softmax") -> keras.Model:
    """The full training model: uint8 input, augmentation, classifier (see module docstring).

    num_classes is the competition's outputs (no default: a model's head must never be sized by
    accident): 2 or more classes under softmax; with activation="sigmoid" (several labels, a scaled
    number or grade: ncfm.task) one or more outputs, each in [0, 1] on its own.
    """
    least = 2 if activation == "softmax" else 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < least:
        raise ValueError(f"num_classes must be an integer >= {least}, received num_classes={num_classes!r}")
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"activation must be softmax or sigmoid, received {activation!r}")
    spec = get_backbone(backbone)
    size = image_size or spec.size
    if size < spec.min_size:
        raise NcfmError(f"image_size={size} is too small for {backbone}; its minimum is {spec.min_size}")
    base = _make_backbone(spec, size, resolve_weights(weights, spec))
    base.name = "backbone"  # fixed name so freezing and unfreezing find it in any backbone

    pixels = keras.Input((size, size, 3), name="pixels")
    preprocess = preprocessing_layer(spec.preprocessing)
    x = base(pixels if preprocess is None else preprocess(pixels))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    # its own stream: with the augmentation's seed the flip coins would track the first dropout units
    x = keras.layers.Dropout(dropout, seed=None if seed is None else seed + 1, name="dropout")(x)
    probs = keras.layers.Dense(int(num_classes), activation=activation, dtype="float32", name="probs")(x)
    classifier = keras.Model(pixels, probs, name="classifier")

    raw = keras.Input((size, size, 3), dtype="uint8", name="image")
    augmented = RandomAugment(**(augment or {}), seed=seed, name="augment")(raw)
    return keras.Model(raw, classifier(augmented), name=f"ncfm_{backbone}")


def inference_model(model: keras.Model) -> keras.Model:
    """uint8 (B, S, S, 3) "image" -> probabilities: the classifier of `model` without augmentation.

    It shares the classifier's layers and weights (no copy), keeps `model`'s name (ncfm_<backbone>)
    and holds only Keras' own layers: `inference_model(model).save(path)` gives a file that
    `keras.saving.load_model(path)` loads without ncfm. Takes a training model or an inference
    model (then it rewraps the same classifier).
    """
    classifier = classifier_of(model)
    size = classifier.input_shape[1]
    image = keras.Input((size, size, 3), dtype="uint8", name="image")
    return keras.Model(image, classifier(image), name=model.name)


def classifier_of(model: keras.Model) -> keras.Model:
    """The nested "classifier" of a training model or of an (loaded) inference model."""
    try:
        return model.get_layer("classifier")
    except ValueError:
        raise NcfmError(f"model {model.name!r} has no nested 'classifier' model: it was not built by "
                        f"ncfm.model.build_model / inference_model") from None


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


def nested_layers(model: keras.Model):
    """Every layer of `model` and of the models nested in it, depth first."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from nested_layers(layer)


def trainable_batch_norms(model: keras.Model) -> list:
    """The BatchNorm layers of `model` (nested ones too) that run in training mode when it does."""
    return [layer for layer in nested_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def recompute_bn_statistics(model: keras.Model, batches) -> int:
    """Precise BatchNorm: replace each trainable BatchNorm layer's moving mean and variance by the
    plain average of its batch statistics over `batches` (uint8 image batches, no augmentation),
    computed with the model's current weights. Returns the number of layers recomputed.

    During training the moving statistics are an exponential average over the last few dozen
    steps, of augmented images, taken while the weights moved; under --ema they even belong to
    other weights than the averaged ones that are saved. Inference then normalises with statistics
    that fit neither the saved weights nor the images it is shown. Recomputing them once, for the
    weights that are kept, is "precise BN" (Wu and Johnson, Rethinking "Batch" in BatchNorm, 2021).

    The batches run in training mode with every dropout rate at 0, so that only BatchNorm behaves
    as in training; batch i enters the average with momentum i/(i+1). A layer that is not
    trainable (frozen BatchNorm of pretrained weights, a frozen backbone) runs in inference mode and
    keeps its statistics. The result depends on the weights and the batches only, not on the
    statistics before, so recomputing twice gives the same model. Rates and momenta are restored."""
    norms = trainable_batch_norms(model)
    if not norms:
        return 0
    drops = [layer for layer in nested_layers(model) if isinstance(layer, keras.layers.Dropout)]
    momenta, rates = [layer.momentum for layer in norms], [layer.rate for layer in drops]
    try:
        for layer in drops:
            layer.rate = 0.0
        for i, x in enumerate(batches):
            for layer in norms:
                layer.momentum = i / (i + 1)
            model(x, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
        for layer, rate in zip(drops, rates):
            layer.rate = rate
    return len(norms)


def backbone_stages(model: keras.Model) -> dict[str, int]:
    """Each backbone weight's stage (variable path -> 1 for the shallowest stage with weights, 2, ...):
    a stage ends where the feature map's side falls to 0.7 of the stage's or less (a stride-2
    convolution or pooling, ConvNeXt's stride-4 stem). Valid-padding convolutions that trim a few
    pixels and squeeze-and-excitation branches (1x1 maps) end none. A layer belongs to the stage its
    output is in, so a stride-2 layer starts the next one. At their native sizes: ConvNeXt 4 stages
    (the stem with stage 0, then each downsampling block with its stage); every other backbone here 5
    (ResNet50: conv1, conv2..conv5; DenseNet121: conv1, then each dense block with the transition
    after it; EfficientNetV2: the stem, blocks 2, 3, 4-5, 6+; InceptionV3 and InceptionResNetV2: two
    stem stages, then the 35-, 17- and 8-pixel blocks at 299 px; Xception: block 1, then one stage
    per downsampling residual block).
    The head's weights (pool, dropout, probs) are not the backbone's and are absent."""
    stage, side, stages = 0, None, {}
    for layer in backbone_of(model).layers:
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            shape = None
        if shape is not None and len(shape) == 4 and shape[1] is not None:
            if side is None:
                side = shape[1]
            elif shape[1] <= 0.7 * side and not (shape[1] == 1 and side > 2):
                stage, side = stage + 1, shape[1]
        for weight in layer.weights:
            stages[weight.path] = stage
    ranks = {s: i + 1 for i, s in enumerate(sorted(set(stages.values())))}
    return {path: ranks[s] for path, s in stages.items()}


def layer_decay_scales(model: keras.Model, decay: float) -> tuple[dict[str, float], int]:
    """Learning-rate factors for layer-wise decay (--lr-decay): the head 1, the backbone's deepest
    stage `decay`, each shallower stage `decay` times the next one's. Returns ({variable path:
    factor} for the backbone's trainable weights, the number of stages)."""
    stages = backbone_stages(model)
    deepest = max(stages.values(), default=0)
    trained = {w.path for w in model.trainable_weights}
    return {path: float(decay ** (deepest + 1 - s)) for path, s in stages.items() if path in trained}, deepest


@keras.saving.register_keras_serializable(package="ncfm")
class LayerwiseAdamW(keras.optimizers.AdamW):
    """AdamW whose step on each variable is scaled by a factor of its own (`scales`: variable path ->
    factor, 1 for those it does not name): layer-wise learning-rate decay, as BEiT and timm's
    `--layer-decay` fine-tune. Keras' optimizers take one rate for all variables; this one multiplies
    it per variable in update_step, so the schedule, EMA and loss scaling work as in AdamW. The
    decoupled weight decay stays at the base rate for every variable."""

    def __init__(self, *args, scales: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.scales = {str(k): float(v) for k, v in (scales or {}).items()}

    def build(self, variables):
        # by position: under tf.distribute update_step receives the replica's variable, not the path's
        self._variable_scales = [self.scales.get(v.path, 1.0) for v in variables]
        super().build(variables)

    def update_step(self, gradient, variable, learning_rate):
        scale = self._variable_scales[self._get_variable_index(variable)]
        if scale != 1.0:
            learning_rate = keras.ops.multiply(keras.ops.cast(learning_rate, variable.dtype), scale)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return super().get_config() | {"scales": self.scales}


def build_tta_model(model: keras.Model, views) -> keras.Model:
    """uint8 (B, S, S, 3) -> per-view probabilities (B, V, K), all views in one forward pass.

    `model` is a training model or an inference model (e.g. a loaded best.keras).
    """
    classifier = classifier_of(model)
    size = classifier.input_shape[1]
    raw = keras.Input((size, size, 3), dtype="uint8", name="image")
    x = TTAViews(views, name="views")(raw)
    probs = classifier(x)
    out = GroupViews(len(views), name="per_view")(probs)
    return keras.Model(raw, out, name="tta")


# ----------------------------------------------------------------------------- what the outputs mean
MODEL_INFO = "ncfm/model.json"  # inside a saved .keras zip, next to Keras' own entries


def write_model_info(path: os.PathLike | str, model: keras.Model, classes: Sequence[str]) -> dict:
    """Store the class names (in output order), image size and backbone inside the saved `path`.

    `model` is what was saved there (or the training model it came from). Call it right after
    model.save(path) and before the file is renamed into place. Keras ignores the entry on load.
    """
    classes = [str(c) for c in classes]
    outputs = model.output_shape[-1]
    if len(classes) != outputs:
        raise ValueError(f"{len(classes)} class names ({', '.join(classes)}) for a model with {outputs} outputs")
    name = model.name
    info = {"classes": classes, "image_size": int(model.input_shape[1]),
            "backbone": name[len("ncfm_"):] if name.startswith("ncfm_") else name}
    with zipfile.ZipFile(path, "a") as z:
        if MODEL_INFO in z.namelist():
            raise ValueError(f"{path}: already holds {MODEL_INFO}")
        z.writestr(MODEL_INFO, json.dumps(info, indent=2))
    return info


def require_model_info(path: os.PathLike | str) -> dict:
    """{"classes": [...], "image_size": S, "backbone": name} as stored by write_model_info; an NcfmError
    saying what is wrong when it is not there (runs.read_model_info gives None instead)."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(MODEL_INFO))
    except FileNotFoundError:
        raise NcfmError(f"{path}: model file not found") from None
    except KeyError:
        raise NcfmError(f"{path}: no {MODEL_INFO} inside, so its class names are unknown; it was "
                        f"saved by an older ncfm or by plain Keras. Retrain the fold") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise NcfmError(f"{path}: cannot read {MODEL_INFO} ({type(e).__name__}: {e}); "
                        f"the file is damaged or not a .keras model") from None
