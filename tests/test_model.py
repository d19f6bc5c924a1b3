"""The model's contract: uint8 in, its own scaling, a freezable backbone, augmentation and
test-time views that are exact where they should be. Random weights, small images, offline."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from ncfm import CLASSES, NcfmError
from ncfm.augment import RandomAugment, TTAViews, affine_warp, compose_affine, tta_parameters
from ncfm.model import (BACKBONES, Preprocess, backbone_of, build_model, classifier_of, freeze_backbone,
                        unfreeze_backbone)

SIZE = 75  # InceptionV3's minimum


def images(n=4, size=SIZE, seed=0) -> np.ndarray:
    """Random uint8 pixels with some structure (a gradient), so warps visibly move things."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, size, dtype="float32")
    x = ramp[None, None, :, None] + rng.integers(0, 55, (n, size, size, 3))
    return x.astype("uint8")


@pytest.fixture(scope="module")
def inception():
    """A fresh random InceptionV3 model at 75 px (each test that changes it rebuilds its own)."""
    return build_model("inception_v3", "none", SIZE, seed=1)


def bn_layers(model):
    return [layer for layer in backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)]


# ----------------------------------------------------------------------------- input contract
def test_model_takes_uint8_pixels_and_returns_8_probabilities(inception):
    assert inception.inputs[0].dtype == "uint8"
    assert tuple(inception.inputs[0].shape) == (None, SIZE, SIZE, 3)
    probs = keras.ops.convert_to_numpy(inception(images(3), training=False))
    assert probs.shape == (3, len(CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_inception_preprocessing_scales_pixels_to_minus_one_one(inception):
    layer = classifier_of(inception).get_layer("preprocess")
    assert isinstance(layer, Preprocess) and layer.mode == "tf"
    x = np.array([0, 127.5, 255], dtype="float32").reshape(1, 1, 3, 1).repeat(3, axis=-1)
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out[0, 0, :, 0], [-1.0, 0.0, 1.0], atol=1e-6)
    full = keras.ops.convert_to_numpy(layer(images(2)))
    assert full.min() >= -1.0 and full.max() <= 1.0


@pytest.mark.parametrize("mode, pixel, expected", [
    ("caffe", (10, 20, 30), (30 - 103.939, 20 - 116.779, 10 - 123.68)),  # RGB -> BGR, minus the mean
    ("torch", (255, 0, 255), ((1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (1 - 0.406) / 0.225)),
    ("raw", (10, 20, 30), (10, 20, 30)),
])
def test_other_preprocessing_modes_match_their_backbones_conventions(mode, pixel, expected):
    out = keras.ops.convert_to_numpy(Preprocess(mode)(np.array(pixel, "float32").reshape(1, 1, 1, 3)))
    np.testing.assert_allclose(out.reshape(3), expected, rtol=1e-5)


# ----------------------------------------------------------------------------- freezing
def test_phase1_freezing_leaves_only_the_head_trainable():
    model = build_model("inception_v3", "none", SIZE, seed=1)
    freeze_backbone(model)
    assert sorted(w.path for w in model.trainable_weights) == ["probs/bias", "probs/kernel"]


def test_frozen_backbone_runs_batchnorm_in_inference_mode():
    model = build_model("inception_v3", "none", SIZE, seed=1)
    base = backbone_of(model)
    x = keras.ops.convert_to_tensor(images(4).astype("float32") / 127.5 - 1)
    before = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in bn_layers(model)]
    # unfrozen, training=True normalises with batch statistics: differs from inference
    assert not np.allclose(keras.ops.convert_to_numpy(base(x, training=True)),
                           keras.ops.convert_to_numpy(base(x, training=False)), atol=1e-4)
    freeze_backbone(model)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(base(x, training=True)),
                               keras.ops.convert_to_numpy(base(x, training=False)), atol=1e-6)
    # a training step on the frozen model moves the head only, never BatchNorm's statistics
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    snapshot = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in bn_layers(model)]
    model.fit(images(8), np.eye(len(CLASSES), dtype="float32")[np.arange(8) % 8], epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in bn_layers(model)]
    assert all(np.array_equal(a, b) for a, b in zip(snapshot, after))
    assert not all(np.array_equal(a, b) for a, b in zip(before, snapshot))  # the unfrozen call did move them


def test_unfreeze_from_a_named_layer_trains_only_the_layers_after_it():
    model = build_model("inception_v3", "none", SIZE, seed=1)
    freeze_backbone(model)
    n = unfreeze_backbone(model, "mixed9", freeze_bn=True)
    layers = backbone_of(model).layers
    start = [layer.name for layer in layers].index("mixed9")
    assert not any(layer.trainable for layer in layers[:start] if layer.weights)
    trainable = [layer for layer in layers[start:] if layer.trainable_weights]
    assert trainable and all(isinstance(layer, keras.layers.Conv2D) for layer in trainable)  # BN stays frozen
    assert n == len(model.trainable_weights)
    assert n == sum(len(layer.trainable_weights) for layer in trainable) + 2  # + the head


def test_unfreeze_everything_with_trainable_batchnorm_sets_its_momentum():
    model = build_model("inception_v3", "none", SIZE, seed=1)
    freeze_backbone(model)
    unfreeze_backbone(model, "", freeze_bn=False, bn_momentum=0.9)
    assert all(layer.trainable and layer.momentum == 0.9 for layer in bn_layers(model))
    assert all(layer.trainable for layer in backbone_of(model).layers)


def test_unfreeze_from_an_unknown_layer_names_it_and_suggests_real_ones(inception):
    with pytest.raises(NcfmError, match=r"--unfreeze-from mixed99: no such layer.*mixed10"):
        unfreeze_backbone(inception, "mixed99")


# ----------------------------------------------------------------------------- backbones
@pytest.mark.parametrize("name", list(BACKBONES))  # 1-4 s each: built and called eagerly, no tracing
def test_every_backbone_builds_at_its_minimum_size_without_weights(name):
    spec = BACKBONES[name]
    size = max(spec.min_size, 32)
    model = build_model(name, "none", size, seed=0)
    assert tuple(model.inputs[0].shape) == (None, size, size, 3)
    assert classifier_of(model).get_layer("preprocess").mode == spec.preprocessing
    probs = keras.ops.convert_to_numpy(model(images(2, size), training=False))
    assert probs.shape == (2, len(CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_image_size_below_the_backbones_minimum_is_refused():
    with pytest.raises(NcfmError, match=r"image_size=60 .*inception_v3.*minimum is 75"):
        build_model("inception_v3", "none", 60)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(NcfmError, match=r"'vgg16'.*inception_v3"):
        build_model("vgg16", "none", 75)


# ----------------------------------------------------------------------------- augmentation
def test_random_augment_is_a_plain_cast_at_inference():
    x = images(4)
    out = RandomAugment(seed=0)(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), x.astype("float32"))


def test_random_augment_changes_training_images_within_shape_dtype_and_range():
    x = images(8)
    layer = RandomAugment(seed=0)
    first = keras.ops.convert_to_numpy(layer(x, training=True))
    second = keras.ops.convert_to_numpy(layer(x, training=True))
    assert first.shape == x.shape and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 255.0
    changed = np.abs(first - x).reshape(len(x), -1).mean(axis=1)
    assert (changed > 1.0).all()  # every image is changed
    assert not np.allclose(first, second)  # and differently on each call


def test_random_augment_survives_a_save_and_load_with_its_settings(tmp_path):
    inp = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    model = keras.Model(inp, RandomAugment(rotation=3.0, vflip=False, seed=5, name="augment")(inp))
    model.save(tmp_path / "m.keras")
    layer = keras.saving.load_model(tmp_path / "m.keras").get_layer("augment")
    assert (layer.rotation, layer.vflip, layer.seed) == (3.0, False, 5)


def test_affine_warp_identity_returns_the_input_exactly():
    x = images(3).astype("float32")
    matrices, offsets = compose_affine(*([np.ones(3, "float32")] * 2), np.zeros(3, "float32"),
                                       np.ones(3, "float32"), *([np.zeros(3, "float32")] * 3))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(affine_warp(x, matrices, offsets)), x)


@pytest.mark.parametrize("flip_x, flip_y, expected", [
    (-1.0, 1.0, lambda x: x[:, :, ::-1]),
    (1.0, -1.0, lambda x: x[:, ::-1]),
    (-1.0, -1.0, lambda x: x[:, ::-1, ::-1]),
])
def test_affine_warp_flips_are_exact(flip_x, flip_y, expected):
    x = images(2, size=10).astype("float32")[:, :, :7]  # not square: rows and columns differ
    one, zero = np.ones(2, "float32"), np.zeros(2, "float32")
    matrices, offsets = compose_affine(flip_x * one, flip_y * one, zero, one, zero, zero, zero)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(affine_warp(x, matrices, offsets)), expected(x))


def test_affine_warp_shift_by_whole_pixels_moves_the_image():
    x = images(1, size=12).astype("float32")
    one, zero = np.ones(1, "float32"), np.zeros(1, "float32")
    matrices, offsets = compose_affine(one, one, zero, one, zero, 2.0 * one, zero)  # sample 2 px to the right
    out = keras.ops.convert_to_numpy(affine_warp(x, matrices, offsets))
    np.testing.assert_array_equal(out[:, :, :-2], x[:, :, 2:])


# ----------------------------------------------------------------------------- test-time views
def test_tta_view_zero_is_the_input_and_the_other_views_differ():
    x = images(2)
    views = tta_parameters(6)
    out = keras.ops.convert_to_numpy(TTAViews(views)(x)).reshape(2, 6, SIZE, SIZE, 3)
    np.testing.assert_array_equal(out[:, 0], x.astype("float32"))
    for v in range(1, 6):
        assert np.abs(out[:, v] - x).mean() > 1.0, f"view {v} equals the input"
    np.testing.assert_array_equal(out[:, 1], x[:, :, ::-1].astype("float32"))  # view 1 = horizontal flip


def test_tta_parameters_are_deterministic_for_a_seed():
    a = tta_parameters(10, ("flips", "zoom", "shift", "crop"), seed=7)
    np.testing.assert_array_equal(a, tta_parameters(10, ("flips", "zoom", "shift", "crop"), seed=7))
    assert not np.array_equal(a, tta_parameters(10, ("flips", "zoom", "shift", "crop"), seed=8))
    assert a.shape == (10, 7)
    np.testing.assert_array_equal(a[0], [1, 1, 0, 1, 0, 0, 0])


def test_tta_parameters_reject_unknown_kinds_and_zero_views():
    with pytest.raises(ValueError, match="tta=0"):
        tta_parameters(0)
    with pytest.raises(ValueError, match="rotate"):
        tta_parameters(4, ("flips", "rotate"))


def test_crop_views_stay_inside_the_image():
    p = tta_parameters(40, ("crop",), seed=1)
    zoom, shifts = p[:, 3], np.abs(p[:, 5:7])
    assert (zoom >= 1.0).all()
    assert (shifts <= ((1 - 1 / zoom) / 2)[:, None] + 1e-6).all()
    assert math.isclose(float(p[0, 3]), 1.0)
