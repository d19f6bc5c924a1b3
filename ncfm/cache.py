"""Decode and resize every image once; reuse the pixels from a memory-mapped file ever after.

    x = load_images("data", folds["image"].tolist(), size=299)   # (N, 299, 299, 3) uint8, read-only

Each image is resized straight to size x size (aspect ratio not kept, as Keras'
`image_size` does): PIL opens it, `draft("RGB", (size, size))` lets the JPEG decoder scale
by 1/2, 1/4 or 1/8 while staying at least size x size, then `resize((size, size), Image.BOX)`
averages the source pixels under each output pixel (area resampling: antialiased, and the
cheapest of PIL's filters; how it compares with bilinear and with Keras' own resize, in CPU
time and in closeness to a full-resolution Lanczos reference, is in docs/raw/cpu-2026-11-22/README.md).
Images smaller than the size (Aerial Cactus' 32x32) are scaled up the same way.
RESIZE_VERSION names this recipe; change it when the recipe changes.

The cache lives in cache_dir (default <data_dir>/cache/) as s<size>-<key>.u8 (raw uint8,
N*size*size*3 bytes) plus s<size>-<key>.json (shape, images, unreadable rows). The key
hashes the image list (order included), each file's byte size and mtime, the size and
RESIZE_VERSION, so changed, added or reordered images give a new file; the data folder's
own location is not in the key, so a moved folder keeps its cache. Workers write their rows
straight into a temporary memmap (memory stays bounded at any N); it is renamed into place,
then the .json is written: a .u8 without its .json, or a leftover .s*.u8.tmp*, is never
read, so an interrupted build cannot pass for a finished one. Old cache files are not
deleted; remove the folder to reclaim space.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sys
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np

from ncfm import NcfmError
from ncfm.fileio import atomic_write_text, fsync_dir, fsync_file

log = logging.getLogger(__name__)

RESIZE_VERSION = "pil-draft-box-v2"
_CHUNK = 32  # images per task: small enough for an even spread and a lively progress bar


def cache_key(data_dir, images: list[str], size: int) -> str:
    """Hex digest of (recipe, size, each image's name, byte size and mtime)."""
    data_dir = Path(data_dir)
    h = hashlib.sha256(f"{RESIZE_VERSION}\n{size}\n".encode())
    for name in images:
        try:
            st = os.stat(data_dir / name)
            h.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}\tmissing\n".encode())
    return h.hexdigest()[:20]


def cache_folder(data_dir, cache_dir=None) -> Path:
    """Where the cache of a data folder lives: cache_dir, else <data_dir>/cache."""
    return Path(cache_dir) if cache_dir else Path(data_dir) / "cache"


def cache_paths(data_dir, images: list[str], size: int, cache_dir=None) -> tuple[Path, Path]:
    """(the .u8 pixel file, its .json meta) for these inputs; neither need exist."""
    folder = cache_folder(data_dir, cache_dir)
    stem = f"s{size}-{cache_key(data_dir, images, size)}"
    return folder / f"{stem}.u8", folder / f"{stem}.json"


def decode_resized(path, size: int) -> np.ndarray:
    """One image as (size, size, 3) uint8 RGB, by the recipe in the module docstring."""
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        if img.mode != "RGB":  # greyscale, CMYK, palette; convert would copy an RGB image too
            img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BOX)
        return np.asarray(img, dtype=np.uint8)


def _describe(path: str, e: Exception) -> str:
    from PIL import UnidentifiedImageError

    try:
        nbytes = os.path.getsize(path)
    except OSError:
        return "file not found"
    if nbytes == 0:
        return "empty file (0 bytes)"
    if isinstance(e, UnidentifiedImageError):
        return f"not an image ({nbytes} bytes)"
    if "truncated" in str(e).lower():
        return f"truncated image ({nbytes} bytes)"
    return f"cannot decode ({e})"


def _fill_rows(tmp: str, shape: tuple, start: int, paths: list[str]) -> list[tuple[int, str]]:
    """Decode paths into rows start.. of the memmap at tmp; return (row, error) for failures."""
    size = shape[1]
    out = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=shape)
    failures = []
    for i, path in enumerate(paths, start):
        try:
            out[i] = decode_resized(path, size)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
            out[i] = 0
            failures.append((i, _describe(path, e)))
    out.flush()
    del out
    return failures


def _reserve(f, nbytes: int) -> None:
    """Claim the disk space of the whole cache before decoding into it: rows are written through
    a memory map, and a full disk under a memory map kills the process (SIGBUS) instead of
    raising an error. posix_fallocate fails cleanly (ENOSPC) now, before minutes of decoding."""
    f.truncate(nbytes)  # the size, sparse: where the file system cannot reserve, rows fill it
    if nbytes and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(f.fileno(), 0, nbytes)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OSError(e.errno, f"{os.strerror(e.errno)}: the image cache needs "
                                       f"{nbytes / 2**30:.2f} GiB", f.name) from e
            # EOPNOTSUPP, EINVAL: this file system cannot reserve space; go on sparse


def _readable_now(data_dir: Path, bad: list, size: int) -> bool:
    """Whether any image recorded as unreadable decodes now (a few images at most: cheap)."""
    for _, name, _ in bad:
        try:
            decode_resized(str(data_dir / name), size)
            return True
        except Exception:  # still unreadable, as recorded
            pass
    return False


def _read_meta(meta_path: Path, n: int, size: int) -> dict | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    data = meta_path.with_suffix(".u8")
    if meta.get("shape") != [n, size, size, 3] or not data.is_file() or data.stat().st_size != n * size * size * 3:
        return None
    return meta


def _build(data_dir: Path, images: list[str], size: int, data_path: Path, meta_path: Path,
           workers: int, progress: bool) -> dict:
    from tqdm import tqdm

    from ncfm.pool import cpu_count, process_pool

    n = len(images)
    shape = (n, size, size, 3)
    try:
        data_path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as e:
        raise NcfmError(f"{data_path.parent}: cannot make the image cache folder here ({e.strerror}); pass "
                        f"--cache-dir a writable folder") from None
    tmp = data_path.with_name(f".{data_path.name}.tmp{os.getpid()}")
    paths = [str(data_dir / name) for name in images]
    workers = cpu_count() if workers <= 0 else workers
    workers = min(workers, max(1, n // _CHUNK))
    log.info("decoding %d images at %dx%d into %s (%d workers)", n, size, size, data_path, workers)
    try:
        with open(tmp, "wb") as f:
            _reserve(f, n * size * size * 3)
        failures = []
        starts = range(0, n, _CHUNK)
        with tqdm(total=n, desc=f"caching {size}px", unit="img",
                  disable=not progress or not sys.stderr.isatty()) as bar:
            if workers == 1:
                for s in starts:
                    failures += _fill_rows(str(tmp), shape, s, paths[s: s + _CHUNK])
                    bar.update(len(paths[s: s + _CHUNK]))
            else:
                with process_pool(workers) as pool:
                    futures = {pool.submit(_fill_rows, str(tmp), shape, s, paths[s: s + _CHUNK]):
                               len(paths[s: s + _CHUNK]) for s in starts}
                    for fut in as_completed(futures):
                        failures += fut.result()
                        bar.update(futures[fut])
        fsync_file(tmp)
        os.replace(tmp, data_path)
        fsync_dir(data_path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    meta = {
        "shape": list(shape), "dtype": "uint8", "recipe": RESIZE_VERSION,
        "bad": sorted([i, images[i], err] for i, err in failures),
        "images": images,
    }
    atomic_write_text(meta_path, json.dumps(meta) + "\n")  # last: its presence marks the cache complete
    return meta


def _load(data_dir, images, size, cache_dir, workers, progress) -> tuple[np.ndarray, dict]:
    if size < 1:
        raise NcfmError(f"received size={size}; the image size must be a positive number of pixels")
    data_dir = Path(data_dir)
    images = [str(i) for i in images]
    n = len(images)
    if n == 0:
        empty = np.zeros((0, size, size, 3), np.uint8)
        empty.flags.writeable = False
        return empty, {"bad": []}
    data_path, meta_path = cache_paths(data_dir, images, size, cache_dir)
    meta = _read_meta(meta_path, n, size)
    if meta is not None and _readable_now(data_dir, meta["bad"], size):
        log.info("an image recorded as unreadable in %s now decodes: rebuilding the cache", meta_path)
        meta = None  # it failed for a passing reason (an I/O error, memory) and was not changed since
    if meta is None:
        meta = _build(data_dir, images, size, data_path, meta_path, workers, progress)
    else:
        log.info("cache hit: %d images at %dx%d from %s", n, size, size, data_path)
    return np.memmap(data_path, dtype=np.uint8, mode="r", shape=(n, size, size, 3)), meta


def load_images(data_dir, images: list[str], size: int, cache_dir=None, workers: int = 0,
                progress: bool = True, on_error: str = "raise"):
    """Pixels of `images` (paths relative to data_dir), shape (N, size, size, 3), uint8 RGB, read-only.

    Decodes only when no finished cache matches. on_error="raise": NcfmError naming every
    unreadable file (the cache is kept; fix or drop the files). on_error="mask": returns
    (pixels, bad row indices) like load_images_masked, with the bad rows all zero.
    """
    if on_error == "mask":
        return load_images_masked(data_dir, images, size, cache_dir, workers, progress)
    if on_error != "raise":
        raise ValueError(f"received on_error={on_error!r}; use 'raise' or 'mask'")
    x, meta = _load(data_dir, images, size, cache_dir, workers, progress)
    if meta["bad"]:
        lines = [f"{Path(data_dir) / name}: {err}" for _, name, err in meta["bad"]]
        raise NcfmError(f"{len(lines)} unreadable image(s); remove them, or leave them out of the manifest "
                        f"with `ncfm split_train_val --skip-bad --force`:\n  " + "\n  ".join(lines))
    return x


def load_images_masked(data_dir, images: list[str], size: int, cache_dir=None, workers: int = 0,
                       progress: bool = True) -> tuple[np.ndarray, list[int]]:
    """Like load_images, but unreadable images become all-zero rows; returns (pixels, their row indices)."""
    x, meta = _load(data_dir, images, size, cache_dir, workers, progress)
    bad = [i for i, _, _ in meta["bad"]]
    for i, name, err in meta["bad"]:
        log.warning("%s: %s (row %d left black)", Path(data_dir) / name, err, i)
    return x, bad
