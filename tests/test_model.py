"""The model's contract: uint8 in, its own scaling, a freezable backbone, augmentation and
test-time views that are exact where they should be, and a saved inference model that plain Keras
loads without ncfm. Random weights, small images, offline."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from ncfm import NcfmError
from ncfm.augment import RandomAugment, TTAViews, affine_warp, compose_affine, tta_parameters
from ncfm.model import (BACKBONES, CAFFE_BGR_MEANS, MODEL_INFO, TORCH_MEAN, TORCH_STD, backbone_of, build_model,
                        build_tta_model, classifier_of, freeze_backbone, inference_model, preprocessing_layer,
                        require_model_info, unfreeze_backbone, write_model_info)

SIZE = 75  # InceptionV3's minimum
K = 5  # classes of the test models: any number, not NCFM's 8


def images(n=4, size=SIZE, seed=0) -> np.ndarray:
    """Random uint8 pixels with some structure (a gradient), so warps visibly move things."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, size, dtype="float32")
    x = ramp[None, None, :, None] + rng.integers(0, 55, (n, size, size, 3))
    return x.astype("uint8")


@pytest.fixture(scope="module")
def inception():
    """A fresh random InceptionV3 model at 75 px (each test that changes it rebuilds its own)."""
    return build_model("inception_v3", "none", SIZE, seed=1, num_classes=K)


def bn_layers(model):
    return [layer for layer in backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)]


# ----------------------------------------------------------------------------- input contract
def test_model_takes_uint8_pixels_and_returns_one_probability_per_class(inception):
    assert inception.inputs[0].dtype == "uint8"
    assert tuple(inception.inputs[0].shape) == (None, SIZE, SIZE, 3)
    probs = keras.ops.convert_to_numpy(inception(images(3), training=False))
    assert probs.shape == (3, K)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_the_number_of_classes_must_be_given():
    with pytest.raises(TypeError, match="num_classes"):
        build_model("inception_v3", "none", SIZE)
    with pytest.raises(ValueError, match="num_classes=1"):
        build_model("inception_v3", "none", SIZE, num_classes=1)


REFERENCE = {  # the backbones' conventions, written out in numpy
    "tf": lambda x: x / 127.5 - 1.0,
    "caffe": lambda x: x[..., ::-1] - np.array(CAFFE_BGR_MEANS),
    "torch": lambda x: (x / 255.0 - np.array(TORCH_MEAN)) / np.array(TORCH_STD),
}


@pytest.mark.parametrize("mode", list(REFERENCE))
def test_preprocessing_of_uint8_pixels_matches_the_backbones_arithmetic(mode):
    x = images(2, size=8)
    x[0, 0, :3] = [[0, 0, 0], [255, 255, 255], [10, 20, 30]]  # the extremes and an asymmetric pixel
    out = preprocessing_layer(mode)(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), REFERENCE[mode](x.astype("float64")),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", list(REFERENCE))
def test_preprocessing_stays_float32_under_mixed_precision(mode):
    x = images(2, size=8)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        out = preprocessing_layer(mode)(x)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(out.dtype) == "float32"  # the backbone rounds it to bfloat16 once
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), REFERENCE[mode](x.astype("float64")),
                               rtol=1e-5, atol=1e-5)


def test_raw_preprocessing_is_left_to_the_backbone():
    assert preprocessing_layer("raw") is None
    with pytest.raises(ValueError, match="'bgr'"):
        preprocessing_layer("bgr")


# ----------------------------------------------------------------------------- freezing
def test_phase1_freezing_leaves_only_the_head_trainable():
    model = build_model("inception_v3", "none", SIZE, seed=1, num_classes=K)
    freeze_backbone(model)
    assert sorted(w.path for w in model.trainable_weights) == ["probs/bias", "probs/kernel"]


def test_frozen_backbone_runs_batchnorm_in_inference_mode():
    model = build_model("inception_v3", "none", SIZE, seed=1, num_classes=K)
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
    model.fit(images(8), np.eye(K, dtype="float32")[np.arange(8) % K], epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in bn_layers(model)]
    assert all(np.array_equal(a, b) for a, b in zip(snapshot, after))
    assert not all(np.array_equal(a, b) for a, b in zip(before, snapshot))  # the unfrozen call did move them


def test_unfreeze_from_a_named_layer_trains_only_the_layers_after_it():
    model = build_model("inception_v3", "none", SIZE, seed=1, num_classes=K)
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
    model = build_model("inception_v3", "none", SIZE, seed=1, num_classes=K)
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
    model = build_model(name, "none", size, seed=0, num_classes=K)
    assert tuple(model.inputs[0].shape) == (None, size, size, 3)
    classifier = classifier_of(model)
    assert ("preprocess" in [layer.name for layer in classifier.layers]) == (spec.preprocessing != "raw")
    assert all(type(layer).__module__.startswith("keras.") for layer in classifier.layers)  # Keras' own only
    probs = keras.ops.convert_to_numpy(model(images(2, size), training=False))
    assert probs.shape == (2, K)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_image_size_below_the_backbones_minimum_is_refused():
    with pytest.raises(NcfmError, match=r"image_size=60 .*inception_v3.*minimum is 75"):
        build_model("inception_v3", "none", 60, num_classes=K)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(NcfmError, match=r"'vgg16'.*inception_v3"):
        build_model("vgg16", "none", 75, num_classes=K)


# ----------------------------------------------------------------------------- the saved inference model
RESNET_SIZE = 32  # ResNet50: the cheapest backbone at a small size, and the caffe preprocessing (a Dense)
NAMES = ["cod", "eel", "ray", "tuna", "none"]

# Runs in a fresh Python where ncfm cannot be imported: what a user of best.keras has.
LOAD_WITHOUT_NCFM = """
import sys
sys.modules["ncfm"] = None  # any `import ncfm...` now raises ImportError
import json, zipfile
import keras, numpy as np
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
classes = json.loads(zipfile.ZipFile(sys.argv[1]).read("ncfm/model.json"))["classes"]
print(json.dumps({"backend": keras.backend.backend(), "classes": classes}))
"""


@pytest.fixture(scope="module")
def saved_resnet(tmp_path_factory):
    """A random ResNet50 training model, its inference model saved with its class names, inputs and
    the in-process predictions."""
    path = tmp_path_factory.mktemp("saved") / "best.keras"
    model = build_model("resnet50", "none", RESNET_SIZE, seed=3, num_classes=K)
    inference = inference_model(model)
    inference.save(path)
    write_model_info(path, model, NAMES)
    x = images(6, RESNET_SIZE, seed=4)
    return dict(model=model, inference=inference, path=path, x=x,
                probs=keras.ops.convert_to_numpy(inference(x)))


def test_inference_model_is_the_classifier_on_uint8_without_augmentation(saved_resnet):
    model, inference, x = saved_resnet["model"], saved_resnet["inference"], saved_resnet["x"]
    assert inference.inputs[0].dtype == "uint8" and tuple(inference.inputs[0].shape) == (None, RESNET_SIZE,
                                                                                         RESNET_SIZE, 3)
    assert inference.name == model.name == "ncfm_resnet50"
    assert classifier_of(inference) is classifier_of(model)  # shared layers: the same weights, no copy
    assert not any(isinstance(layer, RandomAugment) for layer in inference.layers)
    np.testing.assert_allclose(saved_resnet["probs"], keras.ops.convert_to_numpy(model(x, training=False)),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_saved_inference_model_loads_and_predicts_in_plain_keras_without_ncfm(saved_resnet, backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    np.save(tmp_path / "x.npy", saved_resnet["x"])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"KERAS_BACKEND": backend}
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_NCFM, str(saved_resnet["path"]),
                           str(tmp_path / "x.npy"), str(tmp_path / "probs.npy")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said == {"backend": backend, "classes": NAMES}
    probs = np.load(tmp_path / "probs.npy")
    assert not np.allclose(probs, probs[:1])  # the images get different predictions: a real comparison
    np.testing.assert_allclose(probs, saved_resnet["probs"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_convnext_best_keras_loads_in_plain_keras(backend, tmp_path):
    """ConvNeXt's blocks hold Keras' own LayerScale layer: a saved fold must still load without ncfm."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    model = build_model("convnext_tiny", "none", 32, seed=5, num_classes=K)
    inference = inference_model(model)
    inference.save(tmp_path / "best.keras")
    write_model_info(tmp_path / "best.keras", model, NAMES)
    x = images(3, 32, seed=6)
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"KERAS_BACKEND": backend}
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_NCFM, str(tmp_path / "best.keras"),
                           str(tmp_path / "x.npy"), str(tmp_path / "probs.npy")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"backend": backend, "classes": NAMES}
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), keras.ops.convert_to_numpy(inference(x)),
                               rtol=1e-4, atol=1e-5)


def test_class_names_image_size_and_backbone_travel_inside_the_saved_file(saved_resnet):
    path = saved_resnet["path"]
    assert require_model_info(path) == {"classes": NAMES, "image_size": RESNET_SIZE, "backbone": "resnet50"}
    with zipfile.ZipFile(path) as z:
        assert MODEL_INFO in z.namelist() and "model.weights.h5" in z.namelist()


def test_class_names_must_match_the_outputs_and_are_written_once(saved_resnet, tmp_path):
    with pytest.raises(ValueError, match="3 class names.*5 outputs"):
        write_model_info(saved_resnet["path"], saved_resnet["model"], NAMES[:3])
    with pytest.raises(ValueError, match="already holds ncfm/model.json"):
        write_model_info(saved_resnet["path"], saved_resnet["model"], NAMES)


def test_a_file_without_class_names_says_so(tmp_path):
    inp = keras.Input((4,))
    keras.Model(inp, keras.layers.Dense(2)(inp)).save(tmp_path / "plain.keras")
    with pytest.raises(NcfmError, match=r"plain.keras: no ncfm/model.json inside"):
        require_model_info(tmp_path / "plain.keras")
    with pytest.raises(NcfmError, match=r"missing.keras: model file not found"):
        require_model_info(tmp_path / "missing.keras")


def test_caffe_preprocessing_is_fixed_it_never_trains_and_survives_loading(saved_resnet):
    model = build_model("resnet50", "none", RESNET_SIZE, seed=3, num_classes=K)
    unfreeze_backbone(model, "", freeze_bn=False)  # phase 2 at its widest: everything but the preprocessing
    assert not [w.path for w in model.trainable_weights if w.path.startswith("preprocess/")]
    loaded = keras.saving.load_model(saved_resnet["path"], compile=False)
    layer = classifier_of(loaded).get_layer("preprocess")
    assert not layer.trainable and not layer.trainable_weights
    kernel, bias = layer.get_weights()
    np.testing.assert_array_equal(kernel, np.eye(3)[::-1])  # RGB -> BGR
    np.testing.assert_allclose(bias, -np.array(CAFFE_BGR_MEANS), rtol=1e-7)


def test_tta_wraps_a_training_model_and_a_loaded_inference_model_alike(saved_resnet):
    views = tta_parameters(3)
    loaded = keras.saving.load_model(saved_resnet["path"], compile=False)
    per_view = [keras.ops.convert_to_numpy(build_tta_model(m, views)(saved_resnet["x"]))
                for m in (saved_resnet["model"], loaded)]
    assert per_view[0].shape == (len(saved_resnet["x"]), 3, K)
    np.testing.assert_allclose(per_view[1], per_view[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(per_view[0][:, 0], saved_resnet["probs"], rtol=1e-5, atol=1e-6)  # view 0 = plain


def test_a_model_without_a_classifier_is_refused_by_name():
    inp = keras.Input((SIZE, SIZE, 3))
    with pytest.raises(NcfmError, match="'stranger' has no nested 'classifier'"):
        inference_model(keras.Model(inp, keras.layers.GlobalAveragePooling2D()(inp), name="stranger"))


def test_inference_model_runs_under_bfloat16_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = inference_model(build_model("densenet121", "none", RESNET_SIZE, seed=0, num_classes=K))
        probs = model(images(2, RESNET_SIZE))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(probs.dtype) == "float32"  # the head stays float32
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probs).sum(axis=1), 1.0, rtol=1e-5)


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


# ----------------------------------------------------------------------------- random erasing
def test_random_erasing_fills_one_rectangle_of_2_to_33_percent_with_noise():
    x = np.full((16, 40, 40, 3), 128, dtype="uint8")
    plain = dict(hflip=False, vflip=False, rotation=0.0, zoom=0.0, shift=0.0, shear=0.0, brightness=0.0, contrast=0.0)
    out = keras.ops.convert_to_numpy(RandomAugment(**plain, erasing=1.0, seed=2)(x, training=True))
    changed = (out != 128).any(axis=-1)  # (B, H, W): the erased pixels (noise is never exactly 128.0)
    for mask in changed:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert mask.sum() == len(rows) * len(cols)  # one solid rectangle
        assert 0.015 <= mask.mean() <= 0.34
    assert out.min() >= 0.0 and out.max() <= 255.0
    never = keras.ops.convert_to_numpy(RandomAugment(**plain, erasing=0.0, seed=2)(x, training=True))
    np.testing.assert_array_equal(never, x.astype("float32"))
    some = keras.ops.convert_to_numpy(RandomAugment(**plain, erasing=0.5, seed=3)(np.repeat(x, 8, axis=0),
                                                                                    training=True))
    assert 0.3 < (some != 128).any(axis=(1, 2, 3)).mean() < 0.7  # about half the images


def test_erasing_off_draws_nothing_so_the_other_augmentations_are_unchanged():
    x = images(4)
    before = keras.ops.convert_to_numpy(RandomAugment(seed=7)(x, training=True))
    after = keras.ops.convert_to_numpy(RandomAugment(seed=7, erasing=0.0)(x, training=True))
    np.testing.assert_array_equal(after, before)
    with pytest.raises(ValueError, match="erasing=1.5"):
        RandomAugment(erasing=1.5)


def test_random_erasing_runs_inside_a_jax_model_under_jit(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    code = ("import numpy as np, keras, jax\n"
            "from ncfm.augment import RandomAugment\n"
            "layer = RandomAugment(erasing=1.0, seed=1)\n"
            "x = np.full((4, 24, 24, 3), 128, 'uint8')\n"
            "out = np.asarray(jax.jit(lambda v: layer(v, training=True))(x))\n"
            "print(int(((out != 128).any(-1)).any(axis=(1, 2)).sum()))\n")
    env = os.environ | {"KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "4"


# ----------------------------------------------------------------------------- RandAugment / TrivialAugment
PLAIN = dict(hflip=False, vflip=False, rotation=0.0, zoom=0.0, shift=0.0, shear=0.0, brightness=0.0, contrast=0.0)


def test_randaugment_settings_are_parsed_and_bad_ones_named():
    from ncfm.augment import parse_randaugment

    assert parse_randaugment("none") == (0, 0.0)
    assert parse_randaugment("trivial") == (1, -1.0)
    assert parse_randaugment("2,9") == (2, 0.9)
    for bad in ("2", "9,2", "2,11", "1.5,3", "many"):
        with pytest.raises(ValueError, match=f"--randaugment {bad}: expected none, trivial, or N,M"):
            parse_randaugment(bad)


def test_randaugment_at_magnitude_zero_changes_only_through_autocontrast():
    """At magnitude 0 every operation but autocontrast is the identity; on images that already span
    0..255 in every channel autocontrast is one too, so the output is the input (a wrong sign, range
    or threshold in any operation shows here)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 20, 20, 3)).astype("uint8")
    x[:, 0, 0], x[:, 0, 1] = 0, 255
    out = keras.ops.convert_to_numpy(RandomAugment(**PLAIN, randaugment="3,0", seed=4)(x, training=True))
    np.testing.assert_allclose(out, x.astype("float32"), atol=1e-3)


def test_randaugment_draws_its_operations_per_image_and_keeps_the_pixel_range():
    x = np.repeat(images(1), 64, axis=0)  # one image 64 times: differences come from the draws
    out = keras.ops.convert_to_numpy(RandomAugment(**PLAIN, randaugment="trivial", seed=5)(x, training=True))
    assert out.min() >= 0.0 and out.max() <= 255.0
    changed = np.abs(out - x.astype("float32")).reshape(64, -1).max(axis=1) > 1
    assert 0.5 < changed.mean() < 1.0  # identity (and small magnitudes) leave some images as they were
    distinct = {np.round(o, 1).tobytes() for o in out}
    assert len(distinct) > 32  # Keras' RandAugment would give one batch one set of operations
    strong = keras.ops.convert_to_numpy(RandomAugment(**PLAIN, randaugment="2,9", seed=5)(x, training=True))
    assert np.abs(strong - x).mean() > np.abs(out - x).mean()  # 2 operations at 9/10 against 1 at random
    assert np.array_equal(keras.ops.convert_to_numpy(RandomAugment(**PLAIN, seed=5)(x, training=True)), x)
    inference = RandomAugment(randaugment="trivial", seed=5)(x, training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(inference), x.astype("float32"))


def test_randaugment_is_kept_in_the_saved_layer():
    layer = RandomAugment.from_config(RandomAugment(randaugment="2,7").get_config())
    assert (layer.randaugment, layer.random_ops, layer.magnitude) == ("2,7", 2, 0.7)
    with pytest.raises(ValueError, match="--randaugment 0,3"):
        RandomAugment(randaugment="0,3")


# ----------------------------------------------------------------------------- layer-wise learning-rate decay
@pytest.mark.parametrize("backbone", ["inception_v3", "convnext_tiny"])
def test_layer_decay_scales_fall_stage_by_stage_from_the_head(backbone):
    from ncfm.model import backbone_stages, layer_decay_scales

    model = build_model(backbone, "none", 75, num_classes=3)
    scales, n = layer_decay_scales(model, 0.5)
    stages = backbone_stages(model)
    assert 4 <= n <= 8
    assert max(scales.values()) == 0.5 and min(scales.values()) == pytest.approx(0.5 ** n)
    head = [w.path for w in classifier_of(model).get_layer("probs").weights]
    assert not set(head) & set(scales)  # the head trains at the full rate
    order = [scales[w.path] for w in backbone_of(model).trainable_weights]
    assert order == sorted(order)  # deeper weights never train slower
    assert all(scales[p] == pytest.approx(0.5 ** (n + 1 - stages[p])) for p in scales)


def test_layerwise_adamw_scales_each_variables_step_and_survives_saving():
    from ncfm.model import LayerwiseAdamW

    a, b = keras.Variable(np.zeros(3, "float32"), name="a"), keras.Variable(np.zeros(3, "float32"), name="b")
    opt = LayerwiseAdamW(learning_rate=0.1, weight_decay=0.0, scales={b.path: 0.25})
    grads = [keras.ops.ones(3), keras.ops.ones(3)]
    opt.apply(grads, [a, b])
    step_a, step_b = -keras.ops.convert_to_numpy(a), -keras.ops.convert_to_numpy(b)
    np.testing.assert_allclose(step_b, 0.25 * step_a, rtol=1e-4)  # Adam's first step is lr: b's is lr/4
    assert step_a[0] == pytest.approx(0.1, rel=1e-3)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(again, LayerwiseAdamW) and again.scales == {b.path: 0.25}


# ----------------------------------------------------------------------------- precise BatchNorm
def _bn_net(seed=0):
    image = keras.Input((8, 8, 3))
    x = keras.layers.Dropout(0.5, name="drop_before")(image)  # active in training: it would change the statistics
    x = keras.layers.Conv2D(4, 3, name="conv", kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn")(x)
    x = keras.layers.Conv2D(2, 3, name="conv2")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="frozen_bn")(x)
    inner = keras.Model(image, x, name="inner")  # nested, as the backbone is in the classifier
    outer_in = keras.Input((8, 8, 3))
    return keras.Model(outer_in, keras.layers.GlobalAveragePooling2D()(inner(outer_in)))


def test_precise_bn_sets_each_trainable_batchnorm_to_the_plain_average_of_its_batch_statistics():
    from ncfm.model import recompute_bn_statistics

    model = _bn_net()
    inner = model.get_layer("inner")
    frozen = inner.get_layer("frozen_bn")
    frozen.trainable = False
    before_frozen = [w.copy() for w in frozen.get_weights()]
    batches = [np.random.default_rng(i).normal(i, 1 + i, (6, 8, 8, 3)).astype("float32") for i in range(4)]
    conv = keras.Model(inner.input, inner.get_layer("conv").output)
    convs = [keras.ops.convert_to_numpy(conv(x)) for x in batches]  # inference: no dropout
    expected_mean = np.mean([c.mean(axis=(0, 1, 2)) for c in convs], axis=0)
    expected_var = np.mean([c.var(axis=(0, 1, 2)) for c in convs], axis=0)

    assert recompute_bn_statistics(model, batches) == 1
    bn = inner.get_layer("bn")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), expected_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), expected_var, rtol=1e-4, atol=1e-5)
    for a, b in zip(frozen.get_weights(), before_frozen):  # a frozen BatchNorm keeps its statistics
        np.testing.assert_array_equal(a, b)
    assert bn.momentum == 0.9 and inner.get_layer("drop_before").rate == 0.5  # restored
    once = [w.copy() for w in bn.get_weights()]
    recompute_bn_statistics(model, batches)  # the statistics before do not enter: the same result again
    for a, b in zip(bn.get_weights(), once):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_precise_bn_on_a_model_without_trainable_batchnorm_changes_nothing():
    from ncfm.model import recompute_bn_statistics

    model = _bn_net()
    model.trainable = False
    before = [w.copy() for w in model.get_weights()]
    assert recompute_bn_statistics(model, [np.ones((2, 8, 8, 3), "float32")]) == 0
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
