"""Batches of the image cache: what train and predict both read.

    batches = make_batches(images, rows, one_hot(labels, comp.classes), batch_size=32, train=True)

The manifest (folds.csv: ncfm.folds writes it and reads it, read_manifest) names every training
image, its label and its fold; the image cache (ncfm.cache) holds their pixels. A batch is a slice of cache
rows: training batches follow a seeded permutation per epoch, so a resumed run sees exactly
the batches an uninterrupted one would; prediction batches keep the rows' order.
"""

from __future__ import annotations

import math
import os

import numpy as np


def one_hot(labels, classes) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(labels), len(classes)), dtype="float32")
    y[np.arange(len(labels)), [index[c] for c in labels]] = 1.0
    return y


MIXES = ("none", "mixup", "cutmix", "both")
MIX_ALPHA = {"mixup": 0.8, "cutmix": 1.0}  # timm's defaults for the Beta distribution of the mixing weight


def mix_batch(x: np.ndarray, y: np.ndarray, how: str, rng: np.random.Generator, alpha: float = 0.0,
              prob: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """MixUp or CutMix of one training batch (uint8 images, targets), each image with the one the
    batch's random permutation pairs it with, with probability `prob`; "both" picks one of the two
    per batch, as timm does. The weight lam ~ Beta(alpha, alpha) (alpha 0: MIX_ALPHA). MixUp blends
    the pixels (rounded back to uint8) and the targets by lam; CutMix pastes a box of the pair over
    (1 - lam) of the image and weighs the targets by the areas actually kept, so soft targets still
    sum to what they summed to (1 for one class per image)."""
    if how == "none" or rng.random() >= prob:
        return x, y
    if how == "both":
        how = "mixup" if rng.random() < 0.5 else "cutmix"
    lam = float(rng.beta(alpha or MIX_ALPHA[how], alpha or MIX_ALPHA[how]))
    pair = rng.permutation(len(x))
    x, y = np.array(x), np.asarray(y, dtype="float32")
    if how == "mixup":
        mixed = lam * x.astype("float32") + (1 - lam) * x[pair].astype("float32")
        return np.rint(mixed).astype(x.dtype), (lam * y + (1 - lam) * y[pair]).astype("float32")
    h, w = x.shape[1:3]
    ch, cw = int(round(h * np.sqrt(1 - lam))), int(round(w * np.sqrt(1 - lam)))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
    left, right = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
    x[:, top:bottom, left:right] = x[pair, top:bottom, left:right]
    kept = 1 - (bottom - top) * (right - left) / (h * w)
    return x, (kept * y + (1 - kept) * y[pair]).astype("float32")


def make_batches(images, rows, labels=None, batch_size=32, train=False, seed=0, start_epoch=0, workers=2,
                 steps_per_epoch=0, pad=False, mix: str = "none", mix_alpha: float = 0.0, mix_prob: float = 1.0):
    """A keras PyDataset over rows of the uint8 image cache.

    train=True: an endless stream of fixed-size batches, `steps_per_epoch` of them per epoch
    (default: all full batches; the remainder is dropped, so every step has the same shape and
    XLA compiles once); epoch e draws from permutation seed+e, so a resumed run sees exactly
    the batches an uninterrupted one would.
    train=False: each row once, in order; the last batch is smaller, or with pad=True (for
    prediction: one compiled shape) filled up by repeating its last row — drop the extra
    outputs with `[:len(rows)]`. Padded batches with labels also carry sample weights: 0 for
    the repeats and padded/real rows for the real ones, so that Keras' loss and metrics stay
    exact means over the real rows (each batch's loss is divided by its padded length, and the
    epoch's mean weights batches by it; with several devices every batch must be full).
    mix: "mixup", "cutmix" or "both" mixes training batches (mix_batch), from a generator seeded by
    (seed, epoch, step), so a resumed run mixes as an uninterrupted one; host batches only.
    """
    import keras

    if mix not in MIXES:
        raise ValueError(f"mix must be one of {', '.join(MIXES)}; received mix={mix!r}")

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
            if labels is None:
                return (x,)
            if train and mix != "none":
                return mix_batch(x, labels[pick], mix, np.random.default_rng((seed, epoch, step)), mix_alpha, mix_prob)
            if pad and not train:
                weights = np.zeros(len(pick), dtype="float32")
                weights[:min(len(pick), len(rows) - i * batch_size)] = self.steps * batch_size / len(rows)
                return x, labels[pick], weights
            return x, labels[pick]

    return Batches()


def to_device(images):
    """The whole uint8 cache as one tensor in the default device's memory (`--data-on-device`):
    batches are then gathered there and only their row numbers leave the host. Raises
    ValueError when it does not fit."""
    import keras

    try:
        return keras.ops.convert_to_tensor(np.asarray(images))
    except Exception as e:  # the backends' out-of-memory errors share no type
        if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
            raise
        raise ValueError(f"the image cache ({images.nbytes / 2**30:.1f} GiB) does not fit in the device's "
                         f"memory; leave out --data-on-device, or use a smaller --image-size") from None


def read_rows(images, index):
    """images[index] as a new array. Rows of the on-disk cache are read with pread rather than
    through the memory map: mapped pages would stay in the process's resident memory (gigabytes
    for NCFM's stage 2 at 299, docs/raw/cpu-2026-11-22/README.md), while read pages live only in the kernel's
    page cache. A cache on the device (to_device) is gathered there: a tensor on that device."""
    if not isinstance(images, np.ndarray):
        import keras

        if keras.ops.is_tensor(images):
            return keras.ops.take(images, np.asarray(index, dtype="int32"), axis=0)
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
