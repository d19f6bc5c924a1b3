"""Group-aware, stratified k-fold split of the training images -> folds.csv (the `split_train_val` command).

    ncfm split_train_val --data-dir data            # writes data/folds.csv and data/folds.json

Why groups: NCFM's training photos are frames of videos from a few boats, so random or
label-stratified folds put near-identical frames on both sides and validation loss looks
far better than the leaderboard. Each group stays inside one fold. Grouping (--groups):

- boat (default): a boat/camera proxy. Images of one size (the camera's resolution) are
  clustered by their downscaled luminance thumbnails (32x18; correlation distance, average
  linkage, cut at BOAT_DISTANCE). Luminance with per-image standardisation compares the
  scene's layout, so night-vision frames of a deck join its day frames.
- size: the image size (width x height) alone.
- none: plain StratifiedKFold; every image is its own group (group = its row number).

Folds then come from StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed). Its
greedy assignment visits groups in order of how uneven their class mix is, and the seed
only breaks ties in that order: with a few large groups (boats) several seeds often give the
same folds; with groups=none the seed matters as usual. Group
ids are numbered in order of first appearance in the image-sorted table, so the CSV is
byte-identical for the same images and seed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import CLASSES, NcfmError
from ncfm.fileio import atomic_write_text

GROUPINGS = ("boat", "size", "none")
# Correlation distance (1 - Pearson r between standardised luminance thumbnails) at which
# boat clusters stop merging. Frames of one deck sit well below it; different decks above.
BOAT_DISTANCE = 0.5


def _standardised_luminance(thumbs) -> np.ndarray:
    x = np.stack([np.asarray(t, dtype=np.float32) for t in thumbs])
    if x.ndim == 4:  # (N, H, W, 3) RGB -> luminance
        x = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = x.reshape(len(x), -1)
    x -= x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1)


def boat_groups(df: pd.DataFrame, features=None, distance: float = BOAT_DISTANCE) -> np.ndarray:
    """A boat id per row: same image size and a similar-looking scene.

    df needs width and height; features is one thumbnail per row (an (H, W, 3) or (H, W)
    array, or already a flat vector), default df["thumb"] as check_images makes it. Ids are
    0..G-1 in order of first appearance in df.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    if features is None:
        if "thumb" not in df.columns:
            raise ValueError("boat_groups needs thumbnails: pass features= or a df with a 'thumb' column")
        features = df["thumb"].tolist()
    if len(features) != len(df):
        raise ValueError(f"received {len(features)} features for {len(df)} images")
    x = _standardised_luminance(features)
    sizes = list(zip(df["width"].to_numpy(), df["height"].to_numpy()))
    labels = np.empty(len(df), dtype=object)
    for size in sorted(set(sizes)):
        rows = np.flatnonzero([s == size for s in sizes])
        if len(rows) == 1:
            labels[rows] = [(size, 0)]
            continue
        # rows are unit vectors with zero mean: Pearson correlation distance = 1 - dot
        tree = linkage(x[rows], method="average", metric="correlation")
        clusters = fcluster(tree, t=distance, criterion="distance")
        labels[rows] = [(size, int(c)) for c in clusters]
    return _number_by_first_appearance(labels)


def _number_by_first_appearance(keys) -> np.ndarray:
    ids: dict = {}
    return np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)


def make_groups(df: pd.DataFrame, groups: str = "boat", features=None) -> np.ndarray:
    if groups == "boat":
        return boat_groups(df, features)
    if groups == "size":
        return _number_by_first_appearance(zip(df["width"], df["height"]))
    if groups == "none":
        return np.arange(len(df), dtype=np.int64)
    raise NcfmError(f"received groups={groups!r}; choose one of {', '.join(GROUPINGS)}")


def assign_folds(df: pd.DataFrame, n_folds: int = 5, seed: int = 2016, groups: str = "boat",
                 features=None) -> pd.DataFrame:
    """df (image, label[, width, height, thumb]) plus `group` and `fold` (0..n_folds-1), sorted by image.

    Warns (UserWarning) when a class has fewer groups than folds: some folds then hold no
    validation image of that class.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if n_folds < 2:
        raise NcfmError(f"received folds={n_folds}; k-fold needs at least 2 folds")
    order = np.argsort(df["image"].to_numpy(), kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    if features is not None:
        features = [features[i] for i in order]
    unknown = sorted(set(df["label"]) - set(CLASSES))
    if unknown:
        raise NcfmError(f"received label(s) {', '.join(map(str, unknown))}; labels must be among {', '.join(CLASSES)}")
    out = df.copy()
    out["group"] = make_groups(df, groups, features)

    per_class = out.groupby("label")["group"].nunique()
    n_groups = out["group"].nunique()
    if n_groups < n_folds:
        raise NcfmError(
            f"received folds={n_folds} but the images form only {n_groups} group(s) with groups={groups}; "
            f"use --folds {max(2, n_groups)} or fewer, or --groups size/none"
        )
    thin = per_class[per_class < n_folds]
    if len(thin):
        warnings.warn(
            "fewer groups than folds for " + ", ".join(f"{c} ({n})" for c, n in thin.items())
            + f": some of the {n_folds} folds will have no validation image of that class",
            stacklevel=2,
        )
    y = out["label"].to_numpy()
    if groups == "none":
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(out)), y)
    else:
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(out)), y, out["group"].to_numpy())
    fold = np.full(len(out), -1, dtype=np.int64)
    with warnings.catch_warnings():
        # sklearn's "least populated class" warning; ours above names the classes
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for k, (_, test) in enumerate(splits):
            fold[test] = k
    out["fold"] = fold
    return out


def fold_table(folds: pd.DataFrame) -> pd.DataFrame:
    """Images per fold and class, plus totals and the number of groups per fold."""
    table = pd.crosstab(folds["fold"], folds["label"]).reindex(columns=list(CLASSES), fill_value=0)
    table["total"] = table.sum(axis=1)
    table["groups"] = folds.groupby("fold")["group"].nunique()
    return table


# --------------------------------------------------------------------------- command
def main(args) -> int:
    """`ncfm split_train_val`: find, decode-check, group, split, write folds.csv + folds.json."""
    import sys

    from ncfm.dataset import check_images, find_train_images

    data_dir = Path(args.data_dir)
    out = Path(args.out) if args.out else data_dir / "folds.csv"
    if args.folds < 2:
        raise NcfmError(f"received --folds {args.folds}; k-fold needs at least 2 folds")
    df = find_train_images(data_dir)
    print(f"found {len(df)} training images in {data_dir / 'train'}")
    checked = check_images([data_dir / p for p in df["image"]], workers=args.workers,
                           progress=sys.stderr.isatty())
    bad = [(img, err) for img, ok, err in zip(df["image"], checked["ok"], checked["error"]) if not ok]
    if bad and not args.skip_bad:
        lines = [f"{data_dir / img}: {err}; remove it or pass --skip-bad" for img, err in bad]
        raise NcfmError(f"{len(bad)} unreadable image(s):\n  " + "\n  ".join(lines))
    if bad:
        print(f"skipping {len(bad)} unreadable image(s) (--skip-bad):")
        for img, err in bad:
            print(f"  {data_dir / img}: {err}")
    keep = checked["ok"].to_numpy()
    df = df.assign(width=checked["width"].to_numpy(), height=checked["height"].to_numpy(),
                   thumb=checked["thumb"].to_numpy())[keep].reset_index(drop=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folds = assign_folds(df, n_folds=args.folds, seed=args.seed, groups=args.groups)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)

    text = folds[["image", "label", "fold", "group"]].to_csv(index=False, lineterminator="\n")
    meta = {
        "n_folds": args.folds, "seed": args.seed, "groups": args.groups,
        "n_groups": int(folds["group"].nunique()), "n_images": len(folds),
        "skipped": [{"image": img, "error": err} for img, err in bad],
    }
    if args.groups == "boat":
        meta["boat_distance"] = BOAT_DISTANCE
    meta_text = json.dumps(meta, indent=2) + "\n"
    sidecar = out.with_suffix(".json")
    if out.exists():
        if out.read_text() == text:
            status = "unchanged"
        elif not args.force:
            raise NcfmError(
                f"{out}: exists with a different split (other seed, folds, grouping or images); "
                "pass --force to overwrite it, or --out another path"
            )
        else:
            status = "overwritten"
    else:
        status = "written"
    if status != "unchanged":
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text)
    if not sidecar.exists() or sidecar.read_text() != meta_text:
        atomic_write_text(sidecar, meta_text)

    print(f"{meta['n_images']} images in {meta['n_groups']} groups (--groups {args.groups}), "
          f"{args.folds} folds, seed {args.seed}")
    print(fold_table(folds).to_string())
    print(f"{out}: {status} (settings in {sidecar})")
    return 0
