"""Training augmentation and test-time views, as Keras layers that run on the accelerator.

Every geometric change (flips, rotation, zoom, shift, shear) is folded into one affine map per
image and applied with a single bilinear resampling written in `keras.ops` (gathers), so it
runs on any backend and stays inside XLA. Keras' own RandomRotation/RandomZoom use
ImageProjectiveTransform on TensorFlow, which switches XLA off for the whole model.

Coordinates: pixel centres, origin at the image centre. A sampling matrix A (2x2) and offset t
map each output pixel p to the input location A @ p + t; out-of-range locations reflect.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops


def affine_warp(images, matrices, offsets):
    """Resample `images` (B, H, W, C) float at A @ p + t for each output pixel p.

    matrices: (B, 2, 2) acting on (x, y); offsets: (B, 2) in pixels. Identity rows return the
    input exactly (all bilinear weights are 0 or 1).
    """
    shape = ops.shape(images)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    ys = ops.arange(h, dtype="float32") - (ops.cast(h, "float32") - 1.0) / 2.0
    xs = ops.arange(w, dtype="float32") - (ops.cast(w, "float32") - 1.0) / 2.0
    gy, gx = ops.meshgrid(ys, xs, indexing="ij")  # (H, W)
    grid = ops.stack([ops.reshape(gx, (-1,)), ops.reshape(gy, (-1,))], axis=0)  # (2, HW)
    src = ops.matmul(matrices, grid) + ops.expand_dims(offsets, -1)  # (B, 2, HW)
    sx = _reflect(src[:, 0, :] + (ops.cast(w, "float32") - 1.0) / 2.0, w)
    sy = _reflect(src[:, 1, :] + (ops.cast(h, "float32") - 1.0) / 2.0, h)

    x0 = ops.floor(sx)
    y0 = ops.floor(sy)
    wx = ops.expand_dims(sx - x0, -1)
    wy = ops.expand_dims(sy - y0, -1)
    x0 = ops.cast(x0, "int32")
    y0 = ops.cast(y0, "int32")
    x1 = ops.minimum(x0 + 1, w - 1)
    y1 = ops.minimum(y0 + 1, h - 1)

    flat = ops.reshape(images, (-1, c))
    base = ops.expand_dims(ops.arange(b, dtype="int32") * (h * w), -1)  # (B, 1)

    def gather(yi, xi):
        return ops.take(flat, ops.reshape(base + yi * w + xi, (-1,)), axis=0)

    wx = ops.reshape(wx, (-1, 1))
    wy = ops.reshape(wy, (-1, 1))
    top = gather(y0, x0) * (1.0 - wx) + gather(y0, x1) * wx
    bottom = gather(y1, x0) * (1.0 - wx) + gather(y1, x1) * wx
    out = top * (1.0 - wy) + bottom * wy
    return ops.reshape(out, (b, h, w, c))


def _reflect(coord, size):
    """Mirror coordinates into [0, size-1] (fill_mode='reflect' about the edge pixels)."""
    last = ops.cast(size, "float32") - 1.0
    period = ops.maximum(2.0 * last, 1.0)
    coord = ops.abs(ops.mod(coord, period))  # mod may keep the sign on some backends
    return ops.clip(ops.where(coord > last, period - coord, coord), 0.0, last)


def compose_affine(flip_x, flip_y, angle, zoom, shear, shift_x, shift_y):
    """Sampling matrices and offsets from per-image parameters (arrays of shape (B,)).

    angle and shear in radians; zoom > 1 magnifies; shifts in pixels. Works for keras tensors
    and numpy arrays alike.
    """
    cos, sin = ops.cos(angle), ops.sin(angle)
    inv_zoom = 1.0 / zoom
    # rotation @ shear (x' = x + tan(shear) * y), scaled by 1/zoom, then flips on the output axes
    tan_s = ops.tan(shear)
    a00 = cos * inv_zoom * flip_x
    a01 = (cos * tan_s - sin) * inv_zoom * flip_x
    a10 = sin * inv_zoom * flip_y
    a11 = (sin * tan_s + cos) * inv_zoom * flip_y
    matrices = ops.reshape(ops.stack([a00, a01, a10, a11], axis=-1), (-1, 2, 2))
    offsets = ops.stack([shift_x, shift_y], axis=-1)
    return matrices, offsets


# RandAugment's and TrivialAugment's operations, each drawn per image (RandomAugment._random_ops)
RANDOM_OPS = ("identity", "rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness", "contrast",
              "color", "solarize", "posterize", "autocontrast")
GEOMETRIC_OPS = RANDOM_OPS[1:6]


def parse_randaugment(text: str) -> tuple[int, float]:
    """--randaugment as (operations per image, magnitude in [0, 1]; -1 = uniform random per image):
    none -> (0, 0), trivial -> (1, -1), "N,M" -> (N, M / 10)."""
    text = str(text).strip().lower()
    if text in ("none", "", "0"):
        return 0, 0.0
    if text == "trivial":
        return 1, -1.0
    try:
        n, m = (float(v) for v in text.split(","))
    except ValueError:
        n = m = -1.0
    if n != int(n) or not 1 <= n <= 4 or not 0 <= m <= 10:
        raise ValueError(f"--randaugment {text}: expected none, trivial, or N,M with 1 to 4 operations and a "
                         f"magnitude of 0 to 10 (e.g. 2,9)")
    return int(n), m / 10


@keras.saving.register_keras_serializable(package="ncfm")
class RandomAugment(keras.layers.Layer):
    """Random flips, rotation, zoom, shift, shear, brightness and contrast, and random erasing;
    training only.

    Random erasing (Zhong et al., 2017; timm's `--reprob`): with probability `erasing` an image gets
    one rectangle of 2% to 33% of its area, aspect ratio 0.3 to 3.3 (log-uniform), filled with
    uniform noise in [0, 255]. Written as a mask from coordinate comparisons in `keras.ops`, so it
    stays inside XLA on every backend; with erasing=0 it draws no random numbers, so the other
    augmentations see the very draws they saw before it existed.

    RandAugment (Cubuk et al., 2019; `randaugment="N,M"`) and TrivialAugment (Mueller and Hutter,
    2021; "trivial": one operation, magnitude uniform in [0, M_max]) after the affine and colour
    changes: per image, N operations drawn from RANDOM_OPS at magnitude M/10 of each one's range
    (rotate 30 degrees, shear 0.3, translate 30% of the side, brightness, contrast and colour
    x(1 +/- 0.9), solarize from 256 down to 0, posterize to 8 down to 4 bits, autocontrast), the sign
    of signed ones at random. Keras' RandAugment layer draws its operations once per batch (every
    image of a batch gets the same ones), computes all fifteen of its operations for each of them,
    and on TensorFlow resamples with ImageProjectiveTransform, outside XLA; here each image draws its
    own, the geometric ones are one affine resampling per operation and the colour ones a few
    element-wise passes, all in keras.ops. Equalize and sharpness are left out.

    Takes uint8 or float images in [0, 255] and returns float32 in [0, 255]. At inference it is
    a cast. Only the training model (and its last.keras) holds it: the saved inference model
    (ncfm.model.inference_model) leaves it out, so plain Keras can load that one.
    """

    def __init__(self, hflip=True, vflip=True, rotation=10.0, zoom=0.1, shift=0.1, shear=5.0,
                 brightness=0.15, contrast=0.15, erasing=0.0, randaugment="none", seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # resample in float32 even under mixed precision
        super().__init__(**kwargs)
        self.hflip, self.vflip = bool(hflip), bool(vflip)
        self.rotation, self.zoom, self.shift, self.shear = float(rotation), float(zoom), float(shift), float(shear)
        self.brightness, self.contrast = float(brightness), float(contrast)
        if not 0.0 <= float(erasing) <= 1.0:
            raise ValueError(f"erasing is a probability in [0, 1]; received erasing={erasing!r}")
        self.erasing = float(erasing)
        self.randaugment = str(randaugment)
        self.random_ops, self.magnitude = parse_randaugment(randaugment)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def geometric(self) -> bool:
        return self.hflip or self.vflip or any(v > 0 for v in (self.rotation, self.zoom, self.shift, self.shear))

    def call(self, images, training=None):
        x = ops.cast(images, "float32")
        if not training:
            return x
        b = ops.shape(x)[0]
        h = ops.cast(ops.shape(x)[1], "float32")
        w = ops.cast(ops.shape(x)[2], "float32")

        def uniform(limit):
            return keras.random.uniform((b,), -limit, limit, seed=self.seed_generator)

        def coin(enabled):
            if not enabled:
                return ops.ones((b,), "float32")
            return ops.where(keras.random.uniform((b,), 0.0, 1.0, seed=self.seed_generator) < 0.5, -1.0, 1.0)

        if self.geometric:
            matrices, offsets = compose_affine(
                coin(self.hflip), coin(self.vflip),
                uniform(math.radians(self.rotation)),
                ops.exp(uniform(math.log1p(self.zoom))),
                uniform(math.radians(self.shear)),
                uniform(self.shift) * w, uniform(self.shift) * h,
            )
            x = affine_warp(x, matrices, offsets)
        if self.contrast > 0:
            factor = ops.reshape(1.0 + uniform(self.contrast), (-1, 1, 1, 1))
            mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
            x = (x - mean) * factor + mean
        if self.brightness > 0:
            x = x * ops.reshape(1.0 + uniform(self.brightness), (-1, 1, 1, 1))
        x = ops.clip(x, 0.0, 255.0)
        for _ in range(self.random_ops):
            x = self._random_op(x, b, h, w)
        if self.erasing > 0:
            x = self._erase(x, b, h, w)
        return x

    def _random_op(self, x, b, h, w):
        """One RandAugment/TrivialAugment layer: each image gets one operation of RANDOM_OPS."""
        def draw():
            return keras.random.uniform((b,), 0.0, 1.0, seed=self.seed_generator)

        op = ops.minimum(ops.floor(draw() * len(RANDOM_OPS)), len(RANDOM_OPS) - 1)
        m = draw() if self.magnitude < 0 else ops.full((b,), self.magnitude, "float32")
        s = m * ops.where(draw() < 0.5, -1.0, 1.0)

        def chosen(name, value, otherwise=0.0):
            return ops.where(ops.equal(op, RANDOM_OPS.index(name)), value, otherwise)

        angle = chosen("rotate", s * math.radians(30.0))
        cos, sin = ops.cos(angle), ops.sin(angle)
        matrices = ops.reshape(ops.stack([cos, -sin + chosen("shear_x", 0.3 * s),
                                          sin + chosen("shear_y", 0.3 * s), cos], axis=-1), (-1, 2, 2))
        offsets = ops.stack([chosen("translate_x", 0.3 * s) * w, chosen("translate_y", 0.3 * s) * h], axis=-1)
        geometric = ops.reshape(ops.logical_and(op >= 1, op <= len(GEOMETRIC_OPS)), (-1, 1, 1, 1))
        x = ops.where(geometric, affine_warp(x, matrices, offsets), x)

        def per_image(v):
            return ops.reshape(v, (-1, 1, 1, 1))

        factor = per_image(1.0 + 0.9 * s)
        grey = ops.mean(x, axis=-1, keepdims=True)
        mean = ops.mean(grey, axis=(1, 2, 3), keepdims=True)
        step = ops.power(2.0, per_image(ops.round(4.0 * m)))  # posterize: keep 8 - round(4m) bits
        low, high = ops.min(x, axis=(1, 2), keepdims=True), ops.max(x, axis=(1, 2), keepdims=True)
        colour = {"brightness": x * factor,
                  "contrast": (x - mean) * factor + mean,
                  "color": grey + (x - grey) * factor,
                  "solarize": ops.where(x >= per_image(256.0 * (1.0 - m)), 255.0 - x, x),
                  "posterize": ops.floor(x / step) * step,
                  "autocontrast": (x - low) * 255.0 / ops.maximum(high - low, 1.0)}
        for name, changed in colour.items():
            x = ops.where(per_image(ops.equal(op, RANDOM_OPS.index(name))), changed, x)
        return ops.clip(x, 0.0, 255.0)

    def _erase(self, x, b, h, w):
        def draw(low, high):
            return keras.random.uniform((b,), low, high, seed=self.seed_generator)

        area = draw(0.02, 1 / 3) * h * w
        aspect = ops.exp(draw(math.log(0.3), math.log(1 / 0.3)))
        eh = ops.minimum(ops.sqrt(area * aspect), h)
        ew = ops.minimum(ops.sqrt(area / aspect), w)
        top = draw(0.0, 1.0) * (h - eh)
        left = draw(0.0, 1.0) * (w - ew)
        chosen = draw(0.0, 1.0) < self.erasing
        rows = ops.reshape(ops.arange(ops.shape(x)[1], dtype="float32"), (1, -1, 1))
        cols = ops.reshape(ops.arange(ops.shape(x)[2], dtype="float32"), (1, 1, -1))

        def column(v):
            return ops.reshape(v, (-1, 1, 1))

        inside = ((rows >= column(top)) & (rows < column(top + eh)) & (cols >= column(left))
                  & (cols < column(left + ew)) & column(chosen))
        noise = keras.random.uniform(ops.shape(x), 0.0, 255.0, seed=self.seed_generator)
        return ops.where(ops.expand_dims(inside, -1), noise, x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | dict(
            hflip=self.hflip, vflip=self.vflip, rotation=self.rotation, zoom=self.zoom,
            shift=self.shift, shear=self.shear, brightness=self.brightness,
            contrast=self.contrast, erasing=self.erasing, randaugment=self.randaugment, seed=self.seed)


# ----------------------------------------------------------------------------- test-time views
VIEW_KINDS = ("flips", "zoom", "shift", "crop")


def tta_parameters(n_views: int, kinds=("flips", "zoom", "shift"), seed: int = 2016) -> np.ndarray:
    """Parameters of `n_views` deterministic views, shape (V, 7): flip_x, flip_y, angle, zoom,
    shear, shift_x, shift_y (shifts as fractions of the image size).

    View 0 is always the plain image. Flips come first (h, v, both), then seeded random mixes
    of the chosen kinds: small zoom-in, shift, and `crop` (a stronger zoom-in at an offset).
    """
    if n_views < 1:
        raise ValueError(f"tta must be >= 1, received tta={n_views}")
    kinds = tuple(kinds)
    unknown = set(kinds) - set(VIEW_KINDS)
    if unknown:
        raise ValueError(f"unknown TTA view kinds {sorted(unknown)}; choose from {VIEW_KINDS}")
    rng = np.random.default_rng(seed)
    views = [(1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0)]
    flips = [(-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0)] if "flips" in kinds else []
    for fx, fy in flips:
        if len(views) < n_views:
            views.append((fx, fy, 0.0, 1.0, 0.0, 0.0, 0.0))
    while len(views) < n_views:
        fx, fy = (rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0])) if flips else (1.0, 1.0)
        zoom, sx, sy = 1.0, 0.0, 0.0
        if "zoom" in kinds:
            zoom = float(rng.uniform(1.04, 1.12))
        if "shift" in kinds:
            sx, sy = rng.uniform(-0.06, 0.06, size=2)
        if "crop" in kinds and rng.random() < 0.5:
            zoom = float(rng.uniform(1.15, 1.3))
            limit = (1 - 1 / zoom) / 2  # stay inside the image
            sx, sy = rng.uniform(-limit, limit, size=2)
        views.append((fx, fy, 0.0, zoom, 0.0, float(sx), float(sy)))
    return np.asarray(views[:n_views], dtype="float32")


@keras.saving.register_keras_serializable(package="ncfm")
class TTAViews(keras.layers.Layer):
    """(B, H, W, C) images -> (B * V, H, W, C): V fixed views of each image, image-major."""

    def __init__(self, views, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.views = np.asarray(views, dtype="float32").tolist()

    def call(self, images):
        x = ops.cast(images, "float32")
        v = len(self.views)
        if v == 1 and self.views[0] == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]:
            return x
        p = np.asarray(self.views, dtype="float32")
        size = np.array(images.shape[1:3][::-1], dtype="float32")  # (W, H), static
        matrices, offsets = compose_affine(p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4],
                                           p[:, 5] * size[0], p[:, 6] * size[1])
        b = ops.shape(x)[0]
        x = ops.repeat(x, v, axis=0)
        matrices = ops.tile(ops.cast(matrices, "float32"), (b, 1, 1))
        offsets = ops.tile(ops.cast(offsets, "float32"), (b, 1))
        return affine_warp(x, matrices, offsets)

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else input_shape[0] * len(self.views)
        return (batch,) + tuple(input_shape[1:])

    def get_config(self):
        return super().get_config() | {"views": self.views}


@keras.saving.register_keras_serializable(package="ncfm")
class GroupViews(keras.layers.Layer):
    """(B * V, K) per-view outputs -> (B, V, K), undoing TTAViews' image-major layout."""

    def __init__(self, n_views, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.n_views = int(n_views)

    def call(self, x):
        return ops.reshape(ops.cast(x, "float32"), (-1, self.n_views, x.shape[-1]))

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else input_shape[0] // self.n_views
        return (batch, self.n_views, input_shape[-1])

    def get_config(self):
        return super().get_config() | {"n_views": self.n_views}
