"""Find images in Kaggle's NCFM layout, take test ids from the sample submissions, check decodes.

    data/train/<CLASS>/img_NNNNN.jpg      one folder per class (ncfm.CLASSES)
    data/test_stg1/img_NNNNN.jpg          ids as written: img_NNNNN.jpg
    data/test_stg2[/test_stg2]/image_NNNNN.jpg   ids as written: test_stg2/image_NNNNN.jpg
    data/sample_submission_stg{1,2}.csv   decide which ids a submission holds, in which order

Paths in the returned tables are POSIX paths relative to the data folder, so a manifest
stays valid when the folder moves. Problems a person can fix raise NcfmError naming the
path and the fix.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import CLASSES, NcfmError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # compared lower-cased
THUMB_SIZE = (32, 18)  # (width, height) of the thumbnail check_images keeps for grouping
_FORMAT_BY_EXT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def is_image_name(name: str) -> bool:
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_hidden(name: str) -> bool:
    # .DS_Store, macOS resource forks (._img_00003.jpg), editor temp files
    return name.startswith(".") or name in ("Thumbs.db", "desktop.ini")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool that is safe next to a deep-learning framework.

    fork is fastest and needs no `if __name__ == "__main__"` guard in scripts, but forking a
    process that runs TensorFlow/JAX/PyTorch threads can deadlock; once one of those is
    imported, workers come from a forkserver (or spawn) instead.
    """
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    threaded = any(m in sys.modules for m in ("tensorflow", "jax", "torch"))
    if "fork" in methods and not threaded:
        method = "fork"
    else:
        method = "forkserver" if "forkserver" in methods else "spawn"
    return ProcessPoolExecutor(workers, mp_context=mp.get_context(method))


# --------------------------------------------------------------------------- train
def find_train_images(data_dir: os.PathLike | str) -> pd.DataFrame:
    """Every training image as a row (image, label); image is relative to data_dir, sorted."""
    data_dir = Path(data_dir)
    train = data_dir / "train"
    if not train.is_dir():
        raise NcfmError(
            f"{train}: no such folder; point --data-dir at the folder where Kaggle's train.zip "
            f"was extracted (it holds train/{CLASSES[0]}/, train/{CLASSES[1]}/, ...)"
        )
    entries = sorted(e for e in os.listdir(train) if not is_hidden(e))
    for name in entries:
        path = train / name
        if not path.is_dir():
            raise NcfmError(
                f"{path}: stray file in train/ (only the class folders {', '.join(CLASSES)} belong "
                "there); move or delete it"
            )
        if name not in CLASSES:
            hint = [c for c in CLASSES if c.lower() == name.lower()]
            hint = f" (did you mean {hint[0]}?)" if hint else ""
            raise NcfmError(
                f"{path}: unknown class folder{hint}; train/ may only hold {', '.join(CLASSES)}; "
                "rename or remove it"
            )
    missing = [c for c in CLASSES if c not in entries]
    if len(missing) == len(CLASSES):
        raise NcfmError(f"{train}: empty, no class folders; extract Kaggle's train.zip into {data_dir}")
    if missing:
        raise NcfmError(
            f"{train}: missing class folder(s) {', '.join(missing)}; every class "
            f"({', '.join(CLASSES)}) needs a folder, even if you add images to it later"
        )

    rows = []
    for label in CLASSES:
        folder = train / label
        for name in sorted(os.listdir(folder)):
            if is_hidden(name):
                continue
            if not is_image_name(name):
                raise NcfmError(
                    f"{folder / name}: not an image name (expected {', '.join(IMAGE_EXTENSIONS)}, any "
                    "case); move or delete it"
                )
            rows.append((f"train/{label}/{name}", label))
    if not rows:
        raise NcfmError(f"{train}: the class folders hold no images; extract Kaggle's train.zip into {data_dir}")
    empty = [c for c in CLASSES if not any(label == c for _, label in rows)]
    if empty:
        raise NcfmError(
            f"{train}: no images in class folder(s) {', '.join(empty)}; every class needs training images"
        )
    df = pd.DataFrame(rows, columns=["image", "label"])
    return df.sort_values("image", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- test
def sample_submission_path(data_dir: os.PathLike | str, stage: int) -> Path:
    if stage not in (1, 2):
        raise NcfmError(f"received stage={stage!r}; the competition has stages 1 and 2")
    return Path(data_dir) / f"sample_submission_stg{stage}.csv"


def read_sample_submission(data_dir: os.PathLike | str, stage: int) -> pd.DataFrame | None:
    """The stage's sample submission as Kaggle ships it, or None when it is not there."""
    return read_sample_file(sample_submission_path(data_dir, stage))


def read_sample_file(path: os.PathLike | str) -> pd.DataFrame | None:
    """A sample submission file (ids as strings), or None when it is not there.

    `path` is read, or a still-zipped `path.zip` as Kaggle ships it; an unreadable file or one
    without an `image` column is an NcfmError naming it.
    """
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".zip")):
        if candidate.is_file():
            try:
                df = pd.read_csv(candidate, dtype={"image": str})
            except Exception as e:  # pandas raises many types for unreadable CSVs
                raise NcfmError(f"{candidate}: cannot read it as CSV ({e}); download it again from Kaggle")
            if "image" not in df.columns:
                raise NcfmError(
                    f"{candidate}: no 'image' column (header is {','.join(map(str, df.columns))}); "
                    "download it again from Kaggle"
                )
            return df
    return None


def _list_images(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if is_image_name(n) and (folder / n).is_file())


def _image_folder(data_dir: Path, name: str) -> Path | None:
    """data_dir/name, or data_dir/name/name when an archive unpacked one level deeper."""
    for folder in (data_dir / name / name, data_dir / name):
        if folder.is_dir() and _list_images(folder):
            return folder
    return data_dir / name if (data_dir / name).is_dir() else None


def find_test_images(data_dir: os.PathLike | str, stage: int) -> tuple[pd.DataFrame, str]:
    """Test images of a stage: a DataFrame (id, path) and a message saying where the ids came from.

    `id` is exactly what the submission's `image` column must hold (stage 1: img_00005.jpg;
    stage 2: the stage-1 names as they are, then test_stg2/image_00001.jpg). `path` is the
    file, relative to data_dir (a nested test_stg2/test_stg2/ is found). Rows follow the
    sample submission when there is one, else the sorted folder listings.
    """
    data_dir = Path(data_dir)
    sample = read_sample_submission(data_dir, stage)
    if sample is None:
        folder_names = ["test_stg1"] if stage == 1 else ["test_stg1", "test_stg2"]
        folders = {name: _image_folder(data_dir, name) for name in folder_names}
        ids, paths, counts = [], [], []
        for name, folder in folders.items():
            if folder is None:
                raise NcfmError(
                    f"{data_dir / name}: no such folder and no {sample_submission_path(data_dir, stage).name}; "
                    f"extract Kaggle's {name}.zip (or .7z) into {data_dir}"
                )
            names = _list_images(folder)
            if not names:
                raise NcfmError(f"{folder}: no images, and no {sample_submission_path(data_dir, stage).name} "
                                f"to say which to expect; extract Kaggle's {name} archive into {data_dir}")
            rel = folder.relative_to(data_dir).as_posix()
            # stage-2 submissions write stage-2 names with their folder; stage-1 names stay bare
            prefix = "" if name == "test_stg1" else f"{name}/"
            ids += [prefix + n for n in names]
            paths += [f"{rel}/{n}" for n in names]
            counts.append(f"{rel}/ ({len(names)})")
        message = (
            f"no {sample_submission_path(data_dir, stage).name} in {data_dir}: ids from the folder "
            f"listing of {' + '.join(counts)}; put Kaggle's sample submission there to be sure of the ids"
        )
        return pd.DataFrame({"id": ids, "path": paths}), message

    # Index each candidate folder once: 13,153 lookups in a set, not 13,153 stat calls.
    listing: dict[str, set[str]] = {}

    def listed(rel: str) -> set[str]:
        if rel not in listing:
            folder = data_dir / rel
            listing[rel] = set(_list_images(folder)) if folder.is_dir() else set()
        return listing[rel]

    ids = sample["image"].astype(str).tolist()
    paths, missing, searched = [], [], set()
    for image_id in ids:
        head, _, name = image_id.rpartition("/")
        top = head.split("/")[0] if head else "test_stg1"
        candidates = [head or "test_stg1", f"{top}/{top}"] if head else ["test_stg1", "test_stg1/test_stg1"]
        for rel in candidates:
            if name in listed(rel):
                paths.append(f"{rel}/{name}")
                break
        else:
            paths.append(None)
            missing.append(image_id)
            searched.update(candidates)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        where = ", ".join(str(data_dir / s) + "/" for s in sorted(searched))
        raise NcfmError(
            f"{len(missing)} id(s) of {sample_submission_path(data_dir, stage).name} have no image file: "
            f"{shown}; searched {where}; extract the stage's test archive into {data_dir}"
        )
    message = f"ids from {sample_submission_path(data_dir, stage)} ({len(ids)} rows)"
    return pd.DataFrame({"id": ids, "path": paths}), message


# --------------------------------------------------------------------------- decode check
def _check_one(path: str) -> tuple:
    """Decode one image completely; (ok, error, width, height, thumbnail or None)."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a short file must fail, not decode as grey
    fmt = _FORMAT_BY_EXT.get(os.path.splitext(path)[1].lower(), "image")
    try:
        nbytes = os.path.getsize(path)
    except OSError as e:
        return False, f"cannot read ({e.strerror})", 0, 0, None
    if nbytes == 0:
        return False, f"not a {fmt} (0 bytes)", 0, 0, None
    try:
        with Image.open(path) as img:
            width, height = img.size
            # JPEG DCT scaling (1/8): every coefficient is still entropy-decoded, so a
            # truncated file still fails, at a fraction of the cost of a full-size decode.
            img.draft("RGB", THUMB_SIZE)
            img.load()
            thumb = np.asarray(img.convert("RGB").resize(THUMB_SIZE, Image.BILINEAR), dtype=np.uint8)
    except UnidentifiedImageError:
        return False, f"not a {fmt} ({nbytes} bytes that no image decoder recognises)", 0, 0, None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        if "truncated" in str(e).lower():
            return False, f"truncated image ({nbytes} bytes)", 0, 0, None
        return False, f"cannot decode ({type(e).__name__}: {e})", 0, 0, None
    return True, "", width, height, thumb


def check_images(paths: list, workers: int = 0, progress: bool = True) -> pd.DataFrame:
    """Decode every image fully (in parallel) and report what each one is.

    Columns: path (as given), ok, error ('' when ok), width, height (the file's own size),
    thumb (a uint8 RGB array of shape (18, 32, 3), the whole image squashed to 32x18; None
    when not ok). workers=0 uses every core; 1 decodes in this process.
    """
    from tqdm import tqdm

    paths = [str(p) for p in paths]
    workers = cpu_count() if workers <= 0 else workers
    workers = min(workers, max(1, len(paths) // 16))  # a pool is not worth it for a handful
    bar = dict(total=len(paths), desc="checking images", unit="img",
               disable=not progress or not sys.stderr.isatty())
    if workers == 1:
        results = [_check_one(p) for p in tqdm(paths, **bar)]
    else:
        chunksize = max(1, min(64, len(paths) // (workers * 8)))
        with process_pool(workers) as pool:
            results = list(tqdm(pool.map(_check_one, paths, chunksize=chunksize), **bar))
    df = pd.DataFrame(results, columns=["ok", "error", "width", "height", "thumb"])
    df.insert(0, "path", paths)
    return df
