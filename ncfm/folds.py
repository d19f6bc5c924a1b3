"""Group-aware, stratified k-fold split of the training images -> folds.csv (the `split_train_val` command).

    ncfm split_train_val --data-dir data    # writes data/folds.csv, folds.json, competition.json

Why groups: NCFM's training photos are frames of videos from a few boats, so random or
label-stratified folds put near-identical frames on both sides and validation loss looks
far better than the leaderboard. Each group stays inside one fold. Grouping (--groups):

- boat (default): a boat/camera proxy. Images of one size (the camera's resolution) are
  clustered by their downscaled luminance thumbnails (32x18) in two stages: frames that
  correlate strongly (pieces of videos), then pieces whose median thumbnails match on most
  pixels (see boat_groups). Standardised luminance compares the scene's layout, so
  night-vision frames of a deck join its day frames, and a large fish does not split a deck.
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

from ncfm import NcfmError, competition
from ncfm.fileio import atomic_write_text

GROUPINGS = ("boat", "size", "none")
# Stage 1 links frames whose standardised luminance thumbnails correlate (1 - Pearson r below
# FRAME_DISTANCE, average linkage): pieces of videos, strict enough never to mix decks.
FRAME_DISTANCE = 0.3
# Stage 2 joins those pieces into boats by comparing their pixelwise-median thumbnails (fish
# move, the deck does not) with a trimmed distance: the RMS of robust z-score differences
# over the best-matching TRIM_KEEP of pixels, so a big fish covering part of the frame does
# not hide the deck. Frames of one synthetic deck stay below ~0.36; other decks sit above ~0.6.
BOAT_DISTANCE = 0.45
TRIM_KEEP = 0.7


def _luminance(thumbs) -> np.ndarray:
    x = np.stack([np.asarray(t, dtype=np.float32) for t in thumbs])
    if x.ndim == 4:  # (N, H, W, 3) RGB -> luminance
        x = x @ np.array([0.299, 0.587, 0.114], np.float32)
    return x.reshape(len(x), -1)


def _unit_centred(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1)


def _robust_z(x: np.ndarray) -> np.ndarray:
    """Per image: (value - median) / (1.4826 MAD + 1); night-vision frames land on their deck."""
    med = np.median(x, axis=1, keepdims=True)
    mad = np.median(np.abs(x - med), axis=1, keepdims=True)
    return (x - med) / (1.4826 * mad + 1)


def _trimmed_distances(p: np.ndarray, keep: float = TRIM_KEEP) -> np.ndarray:
    """Condensed (scipy pdist order) trimmed RMS distances between the rows of p."""
    k = max(1, int(p.shape[1] * keep))
    out = []
    for i in range(len(p) - 1):
        sq = (p[i + 1:] - p[i]) ** 2
        out.append(np.sqrt(np.partition(sq, k - 1, axis=1)[:, :k].mean(axis=1)))
    return np.concatenate(out)


def boat_groups(df: pd.DataFrame, features=None, distance: float = BOAT_DISTANCE) -> np.ndarray:
    """A boat id per row: same image size and the same-looking deck.

    df needs width and height; features is one thumbnail per row (an (H, W, 3) or (H, W)
    array, or already a flat luminance vector), default df["thumb"] as check_images makes it.
    Within each size: stage 1 clusters frames by correlation (FRAME_DISTANCE), stage 2 joins
    clusters whose median thumbnails match on most pixels (`distance`). Ids are 0..G-1 in
    order of first appearance in df; the result depends only on df's order and contents.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    if features is None:
        if "thumb" not in df.columns:
            raise ValueError("boat_groups needs thumbnails: pass features= or a df with a 'thumb' column")
        features = df["thumb"].tolist()
    if len(features) != len(df):
        raise ValueError(f"received {len(features)} features for {len(df)} images")
    lum = _luminance(features)
    unit, robust = _unit_centred(lum), _robust_z(lum)
    sizes = list(zip(df["width"].to_numpy().tolist(), df["height"].to_numpy().tolist()))
    labels = np.empty(len(df), dtype=object)
    for size in sorted(set(sizes)):
        rows = np.flatnonzero([s == size for s in sizes])
        if len(rows) == 1:
            labels[rows] = [(size, 0)]
            continue
        pieces = fcluster(linkage(unit[rows], method="average", metric="correlation"),
                          t=FRAME_DISTANCE, criterion="distance")
        ids = np.unique(pieces)
        if len(ids) > 1:
            medians = np.stack([np.median(robust[rows[pieces == i]], axis=0) for i in ids])
            joined = fcluster(linkage(_trimmed_distances(medians), method="average"),
                              t=distance, criterion="distance")
            boat_of_piece = dict(zip(ids.tolist(), joined.tolist()))
        else:
            boat_of_piece = {int(ids[0]): 1}
        labels[rows] = [(size, boat_of_piece[int(p)]) for p in pieces]
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
    out = df.copy()
    out["group"] = make_groups(df, groups, features)

    per_class = out.groupby("label")["group"].nunique()
    images = out["label"].value_counts()
    n_groups = out["group"].nunique()
    if n_groups < n_folds:
        raise NcfmError(
            f"received folds={n_folds} but the images form only {n_groups} group(s) with groups={groups}; "
            f"use --folds {max(2, n_groups)} or fewer, or --groups size/none"
        )
    few_images = images[images < n_folds]
    if len(few_images):
        warnings.warn(
            "fewer images than folds for " + ", ".join(f"{c} ({n})" for c, n in few_images.items())
            + f": with {n_folds} folds, some folds validate on no image of that class and its "
            f"out-of-fold scores are noise; add images or use fewer --folds",
            stacklevel=2,
        )
    thin = per_class[(per_class < n_folds) & (images >= n_folds)]
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


def fold_table(folds: pd.DataFrame, classes=None) -> pd.DataFrame:
    """Images per fold and class (in `classes` order), plus totals and the number of groups per fold."""
    table = pd.crosstab(folds["fold"], folds["label"])
    if classes is not None:
        table = table.reindex(columns=list(classes), fill_value=0)
    table["total"] = table.sum(axis=1)
    table["groups"] = folds.groupby("fold")["group"].nunique()
    return table


# --------------------------------------------------------------------------- command
def main(args) -> int:
    """`ncfm split_train_val`: read the layout, decode-check, group, split; write folds.csv,
    folds.json and competition.json."""
    import sys

    from ncfm.dataset import check_images, describe_competition

    data_dir = Path(args.data_dir)
    out = Path(args.out) if args.out else data_dir / "folds.csv"
    if args.folds < 2:
        raise NcfmError(f"received --folds {args.folds}; k-fold needs at least 2 folds")
    comp, df = describe_competition(data_dir, train_dir=args.train_dir, test_dir=args.test_dir,
                                    labels_csv=args.labels_csv, id_column=args.id_column,
                                    label_column=args.label_column, slug=args.competition)
    print(comp.describe())
    print(f"found {len(df)} training images in {data_dir / comp.train['dir']}")
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
    emptied = sorted(set(df.label) - set(df.label[keep]))
    if emptied:
        where = ([str(data_dir / comp.train["dir"] / c) for c in emptied] if comp.train["source"] == "folders"
                 else [f"class {c} of {data_dir / comp.train['csv']}" for c in emptied])
        raise NcfmError(f"no readable image left in {', '.join(where)}; every class needs at least one: "
                        f"replace the unreadable files listed above")
    df = df.assign(width=checked["width"].to_numpy(), height=checked["height"].to_numpy(),
                   thumb=checked["thumb"].to_numpy())[keep].reset_index(drop=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folds = assign_folds(df, n_folds=args.folds, seed=args.seed, groups=args.groups)
    labels_from = data_dir / comp.train.get("csv", comp.train["dir"])
    for w in caught:
        print(f"warning: {labels_from}: {w.message}", file=sys.stderr)

    text = folds[["image", "label", "fold", "group"]].to_csv(index=False, lineterminator="\n")
    meta = {
        "n_folds": args.folds, "seed": args.seed, "groups": args.groups,
        "n_groups": int(folds["group"].nunique()), "n_images": len(folds),
        "skipped": [{"image": img, "error": err} for img, err in bad],
    }
    if args.groups == "boat":
        meta.update(frame_distance=FRAME_DISTANCE, boat_distance=BOAT_DISTANCE, trim_keep=TRIM_KEEP)
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
    described = competition.path_beside(out)
    competition.save(comp, described)

    print(f"{meta['n_images']} images in {meta['n_groups']} groups (--groups {args.groups}), "
          f"{args.folds} folds, seed {args.seed}")
    print(fold_table(folds, comp.classes).to_string())
    print(f"{out}: {status} (settings in {sidecar}; the competition in {described})")
    return 0
