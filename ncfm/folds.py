"""Group-aware, stratified k-fold split of the training images -> folds.csv (the `split_train_val` command).

    ncfm split_train_val --data-dir data    # writes data/folds.csv, folds.json, competition.json

Why groups: NCFM's training photos are frames of videos from a few boats, so random or
label-stratified folds put near-identical frames on both sides and validation loss looks
far better than the leaderboard. Each group stays inside one fold. Grouping (--groups):

- auto (default): boat groups where they are real, else none. Groups are real when the images
  have near-duplicates (most images share a group) and the groups do not follow the classes
  (adjusted mutual information between group and label at most CLASS_FOLLOWING). On photos
  without near-duplicates the thumbnails cluster by look, and look is the class: on 600
  Fashion-MNIST images boat groups put 55 trousers and 1 coat in one fold (AMI 0.51), where
  NCFM-like boats score 0.11-0.15. A competition known for its near-duplicates (NCFM's boats:
  competition.KNOWN_NEAR_DUPLICATES) is grouped whatever the figure. split_train_val prints
  what it decided and why, and folds.json keeps it.
- boat: a boat/camera proxy. Images of one size (the camera's resolution) are
  clustered by their downscaled luminance thumbnails (32x18) in two stages: frames that
  correlate strongly (pieces of videos), then pieces whose median thumbnails match on most
  pixels (see boat_groups). Beyond 4,096 images of one size the clustering goes in rounds of a
  sample each, so time and memory grow with the images, not their pairs (200,000 images: 38 s
  and 1.2 GB on 2 cores). Standardised luminance compares the scene's layout, so
  night-vision frames of a deck join its day frames, and a large fish does not split a deck.
- size: the image size (width x height) alone.
- none: plain StratifiedKFold; every image is its own group (group = its row number).

Folds then come from StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed). Its
greedy assignment visits groups in order of how uneven their class mix is, and the seed
only breaks ties in that order: with a few large groups (boats) several seeds often give the
same folds; with groups=none the seed matters as usual. A few large groups rarely split into
folds of the whole's class shares, so the greedy assignment is then improved by moving and
swapping whole groups between folds (balance_groups). A fold whose class share still differs
from the whole's by more than SHARE_TOLERANCE is warned about, naming the fold and class. Group
ids are numbered in order of first appearance in the image-sorted table, so the CSV is
byte-identical for the same images and seed.

Answers that are not one class per image are stratified by what stands for their class
(`strata`): a grade by itself; a number by its quantile bin (QUANTILE_BINS); several labels by the
image's rarest label for the grouping decision and the warnings, while the folds themselves come
from iterative stratification over the label sets (Sechidis et al., 2011: the rarest label's
images, group by group, each to the fold that still needs most of it; iterative_folds), which
keeps every label's share even where one label per image could not.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import NcfmError, competition
from ncfm.fileio import atomic_write_text

GROUPINGS = ("auto", "boat", "size", "none")
# auto: groups that follow the classes more than this (adjusted mutual information between group
# and label; 0 = independent, 1 = one class per group) are looks, not boats. Fashion-MNIST's
# thumbnails gave 0.51, the synthetic NCFM boats 0.11-0.15 (docs/folds.md).
CLASS_FOLLOWING = 0.3
# auto: with fewer than this share of images in a group of two or more there are no near-duplicates
# to keep together, and stratified folds without groups are as honest and better balanced.
NEAR_DUPLICATE_SHARE = 0.2
# a fold's class share further than this from the whole's (0.05 = 5 points) is warned about
SHARE_TOLERANCE = 0.05
# Stage 1 links frames whose standardised luminance thumbnails correlate (1 - Pearson r below
# FRAME_DISTANCE, average linkage): pieces of videos, strict enough never to mix decks.
FRAME_DISTANCE = 0.3
# Stage 2 joins those pieces into boats by comparing their pixelwise-median thumbnails (fish
# move, the deck does not) with a trimmed distance: the RMS of robust z-score differences
# over the best-matching TRIM_KEEP of pixels, so a big fish covering part of the frame does
# not hide the deck. Frames of one synthetic deck stay below ~0.36; other decks sit above ~0.6.
BOAT_DISTANCE = 0.45
TRIM_KEEP = 0.7
# Scale (boat_groups): a size bucket of up to SAMPLE images is clustered over every pair (SAMPLE^2 / 2
# distances: 67 MB); a bigger one in rounds of SAMPLE images that place the rest by mean correlation.
# A round placing under ROUND_FLOOR of the images it tried ends the rounds (the rest have no
# look-alikes). Beyond SAMPLE // 2 pieces, stage 2 joins the largest exactly and compares each other
# piece with the CANDIDATES of them whose medians correlate best with its own.
SAMPLE = 4096
ROUND_FLOOR = 0.05
CANDIDATES = 8


def _luminance(thumbs, chunk: int = 8192) -> np.ndarray:
    """(N, pixels) float32 luminance of N thumbnails ((H, W, 3) RGB, (H, W) grey, or flat rows),
    converted a chunk at a time so that no float copy of every RGB thumbnail is ever held."""
    n = len(thumbs)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    out = None
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    for start in range(0, n, chunk):
        x = np.stack([np.asarray(t, dtype=np.float32) for t in thumbs[start:start + chunk]])
        if x.ndim == 4:  # (n, H, W, 3) RGB -> luminance
            x = x @ weights
        x = x.reshape(len(x), -1)
        if out is None:
            out = np.empty((n, x.shape[1]), np.float32)
        out[start:start + len(x)] = x
    return out


def _unit_centred(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1)


def _robust_z(x: np.ndarray) -> np.ndarray:
    """Per image: (value - median) / (1.4826 MAD + 1); night-vision frames land on their deck."""
    med = np.median(x, axis=1, keepdims=True)
    mad = np.median(np.abs(x - med), axis=1, keepdims=True)
    return (x - med) / (1.4826 * mad + 1)


def _trimmed(a: np.ndarray, b: np.ndarray, keep: float = TRIM_KEEP) -> np.ndarray:
    """Row-wise trimmed RMS distance between a and b (same shape, or b broadcast against a)."""
    sq = (a - b) ** 2
    k = max(1, int(sq.shape[-1] * keep))
    return np.sqrt(np.partition(sq, k - 1, axis=-1)[..., :k].mean(axis=-1))


def _trimmed_distances(p: np.ndarray, keep: float = TRIM_KEEP) -> np.ndarray:
    """Condensed (scipy pdist order) trimmed RMS distances between the rows of p."""
    return np.concatenate([_trimmed(p[i + 1:], p[i], keep) for i in range(len(p) - 1)])


def _spread(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n) (all of them when n <= k): in image-sorted order, a
    sample that visits every stretch of the files, so every boat's videos are in it."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def _average_linkage(x, metric, t: float) -> np.ndarray:
    """Average-linkage clusters of the rows of x (or of a condensed distance list when metric is
    None) cut at distance t: labels 0..K-1 in the order of scipy's cluster numbers."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(x) == 1 and metric is not None:
        return np.zeros(1, np.int64)
    tree = linkage(x, method="average", metric=metric) if metric else linkage(x, method="average")
    return np.unique(fcluster(tree, t=t, criterion="distance"), return_inverse=True)[1].astype(np.int64)


def _frame_pieces(lum: np.ndarray, sample: int, bar, chunk: int = 4096) -> np.ndarray:
    """Stage 1: a piece id per row of lum (one size bucket), pieces of videos.

    Up to `sample` rows: average linkage on correlation distance cut at FRAME_DISTANCE, over every
    pair. More rows go in rounds: the linkage clusters an evenly spread sample of the rows not yet
    placed, then every other row joins the sample's piece it correlates with best on average,
    when that average distance is within FRAME_DISTANCE; this is the test average linkage applies
    when it merges one frame into a cluster, and costs rows x pieces, not rows squared. Rows that
    joined nothing start the next round. A round that places under ROUND_FLOOR of the rows it tried
    ends the rounds: what is left has no look-alike in a sample of its own kind, and each of its
    rows is a piece of its own. Flat thumbnails (one grey level: no layout to correlate) are one piece.
    """
    n = len(lum)
    piece = np.full(n, -1, dtype=np.int64)
    flat = lum.max(axis=1) == lum.min(axis=1)
    next_id = 0
    if flat.any():
        piece[flat], next_id = 0, 1
        bar.update(int(flat.sum()))
    rest = np.flatnonzero(~flat)
    while len(rest):
        chosen = rest[_spread(len(rest), sample)]
        unit = _unit_centred(lum[chosen])
        labels = _average_linkage(unit, "correlation", FRAME_DISTANCE)
        piece[chosen] = labels + next_id
        bar.update(len(chosen))
        others = np.setdiff1d(rest, chosen, assume_unique=True)
        n_pieces = int(labels.max()) + 1
        if not len(others):
            break
        means = np.zeros((n_pieces, lum.shape[1]), np.float32)
        np.add.at(means, labels, unit)
        means /= np.bincount(labels, minlength=n_pieces)[:, None]
        joined = np.full(len(others), -1, dtype=np.int64)
        for start in range(0, len(others), chunk):
            corr = _unit_centred(lum[others[start:start + chunk]]) @ means.T  # mean correlation per piece
            best = corr.argmax(axis=1)
            close = corr[np.arange(len(best)), best] >= 1 - FRAME_DISTANCE
            joined[start:start + chunk] = np.where(close, best, -1)
        placed = joined >= 0
        piece[others[placed]] = joined[placed] + next_id
        bar.update(int(placed.sum()))
        next_id += n_pieces
        rest = others[~placed]
        if placed.mean() < ROUND_FLOOR:
            piece[rest] = next_id + np.arange(len(rest))
            bar.update(len(rest))
            break
    return piece


def _piece_medians(lum: np.ndarray, piece: np.ndarray, sample: int) -> np.ndarray:
    """The pixelwise median of each piece's robust z-scored thumbnails (of `sample` members spread
    over a larger piece); (pieces, pixels)."""
    order = np.argsort(piece, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(piece[order])) + 1]
    ends = np.r_[starts[1:], len(order)]
    medians = np.empty((len(starts), lum.shape[1]), np.float32)
    singles = np.flatnonzero(ends - starts == 1)
    for a in range(0, len(singles), 8192):  # a piece of one frame is its own median
        some = singles[a:a + 8192]
        medians[some] = _robust_z(lum[order[starts[some]]])
    for p in np.flatnonzero(ends - starts > 1):
        rows = order[starts[p]:ends[p]]
        rows = rows[_spread(len(rows), sample)]
        medians[p] = np.median(_robust_z(lum[rows]), axis=0)
    return medians


def _join_pieces(medians: np.ndarray, sizes: np.ndarray, distance: float, sample: int, chunk: int = 256) -> np.ndarray:
    """Stage 2: a boat id per piece. Up to `sample` pieces: average linkage on trimmed distances
    between their medians, cut at `distance`, over every pair. More pieces: the `sample` largest are
    joined that way, and each other piece joins the boat of the nearest of them (trimmed distance
    within `distance`) among the CANDIDATES whose medians correlate best with its own; else it is a
    boat of its own."""
    n = len(medians)
    if n == 1:
        return np.zeros(1, np.int64)
    if n <= sample:
        return _average_linkage(_trimmed_distances(medians), None, distance)
    chosen = np.sort(np.argsort(-sizes, kind="stable")[:sample])
    boat = np.full(n, -1, dtype=np.int64)
    boat[chosen] = _average_linkage(_trimmed_distances(medians[chosen]), None, distance)
    next_id = int(boat.max()) + 1
    unit = _unit_centred(medians[chosen])
    others = np.setdiff1d(np.arange(n), chosen, assume_unique=True)
    k = min(CANDIDATES, len(chosen))
    for start in range(0, len(others), chunk):
        part = others[start:start + chunk]
        corr = _unit_centred(medians[part]) @ unit.T
        near = np.argpartition(-corr, k - 1, axis=1)[:, :k]  # (part, k) candidates
        dist = _trimmed(medians[part][:, None, :], medians[chosen[near]])
        best = dist.argmin(axis=1)
        close = dist[np.arange(len(part)), best] <= distance
        boat[part[close]] = boat[chosen[near[close, best[close]]]]
        boat[part[~close]] = next_id + np.arange(int((~close).sum()))
        next_id += int((~close).sum())
    return boat


def boat_groups(df: pd.DataFrame, features=None, distance: float = BOAT_DISTANCE, sample: int | None = None,
                progress: bool = False) -> np.ndarray:
    """A boat id per row: same image size and the same-looking deck.

    df needs width and height; features is one thumbnail per row (an (H, W, 3) or (H, W)
    array, or already a flat luminance vector), default df["thumb"] as check_images makes it.
    Within each size: stage 1 clusters frames into pieces of videos by correlation (FRAME_DISTANCE;
    _frame_pieces), stage 2 joins pieces whose median thumbnails match on most pixels (`distance`;
    _join_pieces). Ids are 0..G-1 in order of first appearance in df; the result depends only on
    df's order and contents.

    Cost: a size bucket of up to `sample` images (default SAMPLE, read when called) and up to
    `sample` // 2 pieces is clustered over every pair, as before 2026-12-05: for NCFM (3,777 images,
    at most about 2,000 of one size) the groups are the same. A bigger bucket is clustered in rounds
    of `sample` images, each placing the rest by their mean correlation with its pieces (the test
    average linkage itself applies), so time grows with images x pieces, and memory is the
    thumbnails' float32 luminance (2.3 KB an image) plus one sample's pairs (4,096: 67 MB), where
    every pair of 50,000 images took 20 GB. docs/folds.md compares the groups with the old ones.
    progress shows a bar of images placed.
    """
    if features is None:
        if "thumb" not in df.columns:
            raise ValueError("boat_groups needs thumbnails: pass features= or a df with a 'thumb' column")
        features = df["thumb"].tolist()
    if len(features) != len(df):
        raise ValueError(f"received {len(features)} features for {len(df)} images")
    from tqdm import tqdm

    sample = SAMPLE if sample is None else sample
    if sample < 2:
        raise ValueError(f"received sample={sample}; rounds need at least 2 images")
    lum = _luminance(features)
    frame_sizes = np.stack([df["width"].to_numpy(np.int64), df["height"].to_numpy(np.int64)], axis=1)
    buckets, bucket_of = np.unique(frame_sizes, axis=0, return_inverse=True)
    bucket_of = bucket_of.reshape(-1)
    boat = np.empty(len(df), dtype=np.int64)
    with tqdm(total=len(df), desc="grouping", unit="img", disable=not progress) as bar:
        for b in range(len(buckets)):
            rows = np.flatnonzero(bucket_of == b)
            part = lum if len(rows) == len(lum) else lum[rows]
            pieces = _frame_pieces(part, sample, bar)
            sizes_of_piece = np.bincount(pieces)
            joined = _join_pieces(_piece_medians(part, pieces, sample), sizes_of_piece, distance, sample // 2)
            boat[rows] = joined[pieces] + b * len(df)  # distinct across buckets
    return _number_by_first_appearance(boat)


def _number_by_first_appearance(keys) -> np.ndarray:
    ids: dict = {}
    return np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)


def make_groups(df: pd.DataFrame, groups: str = "boat", features=None, progress: bool = False) -> np.ndarray:
    if groups == "boat":
        return boat_groups(df, features, progress=progress)
    if groups == "size":
        return _number_by_first_appearance(zip(df["width"], df["height"]))
    if groups == "none":
        return np.arange(len(df), dtype=np.int64)
    raise NcfmError(f"received groups={groups!r}; choose one of {', '.join(GROUPINGS)}")


def class_following(labels, groups) -> float:
    """How much the groups follow the classes: adjusted mutual information between label and group
    (0 for groups drawn independently of the classes, 1 when each group is one class)."""
    from sklearn.metrics import adjusted_mutual_info_score

    return float(adjusted_mutual_info_score(np.asarray(labels), np.asarray(groups)))


def near_duplicate_share(groups) -> float:
    """The share of images that share their group with at least one other image."""
    sizes = np.bincount(np.asarray(groups))
    return float(sizes[sizes > 1].sum() / max(1, len(groups)))


def choose_groups(df: pd.DataFrame, features=None, known_near_duplicates: str = "",
                  progress: bool = False) -> tuple[np.ndarray, str, str]:
    """`--groups auto`: (group ids, the grouping used, why). Boat groups when the images have
    near-duplicates and the groups do not follow the classes, or when the competition is known for
    its near-duplicates (`known_near_duplicates` says what they are); else none."""
    boats = boat_groups(df, features, progress=progress)
    shared, follows = near_duplicate_share(boats), class_following(df["label"], boats)
    found = (f"{len(np.unique(boats))} look-alike groups hold {shared:.0%} of the images; class-following "
             f"{follows:.2f}, the adjusted mutual information of group and label")
    if known_near_duplicates:
        return boats, "boat", f"boat groups: the competition's photos are {known_near_duplicates} ({found})"
    if shared < NEAR_DUPLICATE_SHARE:
        return (make_groups(df, "none"), "none",
                f"none: no near-duplicates to keep together ({found}); stratified folds without groups")
    if follows > CLASS_FOLLOWING:
        return (make_groups(df, "none"), "none",
                f"none: the look-alike groups follow the classes ({found}, above {CLASS_FOLLOWING}). Grouped, "
                f"each fold would get its own class mix; stratified folds without groups (--groups boat forces them)")
    return boats, "boat", (f"boat groups: near-duplicate frames, none of them to span two folds ({found}, at most "
                           f"{CLASS_FOLLOWING})")


def balance_groups(counts: np.ndarray, fold_of: np.ndarray, n_folds: int, max_passes: int = 50) -> np.ndarray:
    """Improve an assignment of whole groups to folds: move one group, or swap two, while that brings
    every fold's class counts nearer its 1/n_folds share of the whole (chi-square-like cost, so
    fold sizes even out too). counts: (groups, classes) images; fold_of: each group's fold. No fold
    is ever emptied. Deterministic: groups are visited in order."""
    counts = np.asarray(counts, dtype=np.float64)
    fold_of = np.array(fold_of, dtype=np.int64)
    target = counts.sum(axis=0) / n_folds
    scale = np.maximum(target, 1.0)
    per_fold = np.zeros((n_folds, counts.shape[1]))
    np.add.at(per_fold, fold_of, counts)

    def cost(rows):  # rows: (..., classes) fold counts
        return (((rows - target) ** 2) / scale).sum(axis=-1)

    swaps = len(counts) <= 400  # all pairs are O(groups^2) per pass
    for _ in range(max_passes):
        improved = False
        for g in range(len(counts)):
            a = fold_of[g]
            if per_fold[a].sum() - counts[g].sum() <= 0:
                continue
            moved_to = per_fold + counts[g]  # every fold b with g added
            gain = cost(per_fold[a]) + cost(per_fold) - cost(per_fold[a] - counts[g]) - cost(moved_to)
            gain[a] = 0.0
            b = int(np.argmax(gain))
            if gain[b] > 1e-9:
                per_fold[a] -= counts[g]
                per_fold[b] += counts[g]
                fold_of[g], improved = b, True
        if swaps:
            for g in range(len(counts)):
                for h in range(g + 1, len(counts)):
                    a, b = fold_of[g], fold_of[h]
                    if a == b:
                        continue
                    diff = counts[h] - counts[g]
                    gain = (cost(per_fold[a]) + cost(per_fold[b])
                            - cost(per_fold[a] + diff) - cost(per_fold[b] - diff))
                    if gain > 1e-9 and (per_fold[a] + diff).sum() > 0 and (per_fold[b] - diff).sum() > 0:
                        per_fold[a] += diff
                        per_fold[b] -= diff
                        fold_of[g], fold_of[h], improved = b, a, True
        if not improved:
            break
    return fold_of


def share_drift(folds: pd.DataFrame, multilabel: bool = False) -> tuple[float, int, str, float, float]:
    """The largest gap between a fold's class share and the whole's: (gap, fold, class, the fold's
    share, the whole's share). multilabel: each label's share of the images (labels space-separated)."""
    member = folds["label"].str.get_dummies(sep=" ") if multilabel else pd.get_dummies(folds["label"])
    whole, shares = member.mean(), member.groupby(folds["fold"]).mean()
    gaps = (shares - whole).abs()
    fold, label = gaps.stack().idxmax()
    return float(gaps.loc[fold, label]), int(fold), str(label), float(shares.loc[fold, label]), float(whole[label])


QUANTILE_BINS = 10  # a number to predict is stratified by this many quantile bins (fewer for few images)


def strata(labels: pd.Series, task: str = "single") -> pd.Series:
    """What stands for an image's class when stratifying a task (see the module docstring)."""
    labels = labels.astype(str)
    if task == "regression":
        values = pd.to_numeric(labels, errors="coerce")
        bins = max(2, min(QUANTILE_BINS, len(values) // 20))
        codes = pd.qcut(values.rank(method="first"), bins, labels=False)
        return codes.map(lambda b: f"bin{int(b)}")
    if task == "multilabel":
        counts = pd.Series([t for ts in labels.str.split() for t in ts]).value_counts()
        return labels.str.split().map(lambda ts: min(ts, key=lambda t: (counts[t], t)))
    return labels


def iterative_folds(label_counts: np.ndarray, sizes: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Iterative stratification of units (groups of images) over their label sets: the fold of each
    unit, given each unit's count of images per label (units x labels) and its number of images.

    While a label is left, the one with the fewest units left goes first: each of its units (in a
    seeded random order) goes to the fold that still wants most of that label and of the unit's
    other labels (each as a share of its total), ties to the fold that wants most images, then at
    random; a fold's wants drop by what the unit brings. Units without labels fill the folds that
    want most images."""
    rng = np.random.default_rng(seed)
    counts, sizes = np.asarray(label_counts, dtype=np.float64), np.asarray(sizes, dtype=np.float64)
    totals = np.maximum(counts.sum(axis=0), 1.0)
    want_labels = np.tile(counts.sum(axis=0) / n_folds, (n_folds, 1))
    want_size = np.full(n_folds, sizes.sum() / n_folds)
    fold_of = np.full(len(counts), -1, dtype=np.int64)

    def place(unit: int, label: int | None) -> None:
        # what the fold still wants of all the unit brings (a group brings several images, each
        # several labels), each label as a share of its total; the label being placed first
        brings = (want_labels / totals) @ counts[unit] / max(counts[unit].sum(), 1.0)
        first = want_labels[:, label] / totals[label] if label is not None else 0.0
        fold = int(np.lexsort((rng.random(n_folds), -want_size, -np.round(first + brings, 9)))[0])
        fold_of[unit] = fold
        want_labels[fold] -= counts[unit]
        want_size[fold] -= sizes[unit]

    while (left := (counts[fold_of < 0] > 0).sum(axis=0)).any():
        label = int(np.lexsort((rng.random(len(left)), np.where(left > 0, left, np.inf)))[0])
        for unit in rng.permutation(np.flatnonzero((fold_of < 0) & (counts[:, label] > 0))):
            place(int(unit), label)
    for unit in rng.permutation(np.flatnonzero(fold_of < 0)):
        place(int(unit), None)
    return fold_of


def assign_folds(df: pd.DataFrame, n_folds: int = 5, seed: int = 2016, groups: str = "auto",
                 features=None, known_near_duplicates: str = "", progress: bool = False,
                 task: str = "single") -> pd.DataFrame:
    """df (image, label[, width, height, thumb]) plus `group` and `fold` (0..n_folds-1), sorted by image.

    groups="auto" decides between boat groups and none (choose_groups); the result's
    attrs["groups"] and attrs["why"] say what was used and why, attrs["largest_share_gap"] the
    (gap, fold, class) of share_drift. Warns (UserWarning) when a class
    has fewer groups than folds (some folds then hold no validation image of that class) and when
    a fold's class share is further than SHARE_TOLERANCE from the whole's. For another `task` the
    classes are its strata, and several labels per image are split by iterative_folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if n_folds < 2:
        raise NcfmError(f"received folds={n_folds}; k-fold needs at least 2 folds")
    if groups not in GROUPINGS:
        raise NcfmError(f"received groups={groups!r}; choose one of {', '.join(GROUPINGS)}")
    order = np.argsort(df["image"].to_numpy(), kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    if features is not None:
        features = [features[i] for i in order]
    answers = df["label"].to_numpy()
    df = df.assign(label=strata(df["label"], task).to_numpy())
    out = df.copy()
    if groups == "auto":
        out["group"], groups, why = choose_groups(df, features, known_near_duplicates, progress)
    else:
        out["group"], why = make_groups(df, groups, features, progress), f"--groups {groups}"
        if groups == "boat" and (follows := class_following(out["label"], out["group"])) > CLASS_FOLLOWING:
            warnings.warn(
                f"the boat groups follow the classes (class-following {follows:.2f}, above {CLASS_FOLLOWING}): "
                f"each fold gets its own class mix and validates on classes it hardly trained on; unless "
                f"these images really are near-duplicates of a few scenes, use --groups auto or none",
                stacklevel=2)

    # several labels: each label counts the images and groups it is on, not only those it is the rarest of
    counted = out.assign(label=pd.Series(answers).str.split().to_numpy()).explode("label") if task == "multilabel" else out
    per_class = counted.groupby("label")["group"].nunique()
    images = counted["label"].value_counts()
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
    if groups != "none":
        group_ids = out["group"].to_numpy()
        counts = pd.crosstab(group_ids, y).to_numpy()  # rows: group ids 0..G-1 in order
        first = np.unique(group_ids, return_index=True)[1]
        fold = balance_groups(counts, fold[first], n_folds)[group_ids]
    if task == "multilabel":
        tags = pd.Series(answers).str.get_dummies(sep=" ").to_numpy()
        group_ids = out["group"].to_numpy()
        per_group = np.zeros((group_ids.max() + 1, tags.shape[1]))
        np.add.at(per_group, group_ids, tags)
        fold = iterative_folds(per_group, np.bincount(group_ids), n_folds, seed)[group_ids]
    out["fold"] = fold
    gap, k, label, share, whole = share_drift(out.assign(label=answers) if task == "multilabel" else out,
                                              multilabel=task == "multilabel")
    out.attrs.update(groups=groups, why=why, largest_share_gap=(gap, k, label))
    if gap > SHARE_TOLERANCE and groups != "none":  # without groups the split is as even as the counts allow
        warnings.warn(
            f"the groups unbalance the folds: fold {k} is {share:.0%} {label} against {whole:.0%} of all images "
            f"({gap * 100:.0f} points; tolerance {SHARE_TOLERANCE * 100:.0f}). Its out-of-fold scores judge another "
            f"class mix than the test's; fewer --folds or --groups none balance them, but let near-duplicates leak",
            stacklevel=2)
    out["label"] = answers
    return out


def fold_table(folds: pd.DataFrame, classes=None) -> pd.DataFrame:
    """Images per fold and class (in `classes` order), plus totals and the number of groups per fold."""
    table = pd.crosstab(folds["fold"], folds["label"])
    if classes is not None:
        table = table.reindex(columns=list(classes), fill_value=0)
    table["total"] = table.sum(axis=1)
    table["groups"] = folds.groupby("fold")["group"].nunique()
    return table


def task_fold_table(folds: pd.DataFrame, comp) -> pd.DataFrame:
    """fold_table for the competition's task: images per fold and class or grade; per label (an image
    counts once for each of its labels); or a number's mean and spread."""
    if comp.kind == "multilabel":
        tags = folds["label"].str.get_dummies(sep=" ").reindex(columns=list(comp.classes), fill_value=0)
        table = tags.groupby(folds["fold"]).sum()
        table["images"] = folds.groupby("fold").size()
    elif comp.kind == "regression":
        values = pd.to_numeric(folds["label"]).groupby(folds["fold"])
        table = pd.DataFrame({"images": values.size(), "mean": values.mean().round(2), "std": values.std().round(2),
                              "min": values.min(), "max": values.max()})
    else:
        return fold_table(folds, [str(g) for g in comp.grades] if comp.kind == "ordinal" else comp.classes)
    table["groups"] = folds.groupby("fold")["group"].nunique()
    return table


# --------------------------------------------------------------------------- the manifest
FOLDS_CSV = "folds.csv"  # split_train_val's manifest, in the data folder unless --out/--folds-csv say otherwise


def folds_csv_path(data_dir, given=None) -> Path:
    """The folds manifest a command reads: --folds-csv when given, else <data-dir>/folds.csv."""
    return Path(given) if given else Path(data_dir) / FOLDS_CSV


def read_manifest(folds_csv: Path, fold: int | None = None, classes=None, comp=None) -> tuple[pd.DataFrame, int]:
    """folds.csv as a table (labels as strings) and its number of folds; with `classes`, every
    label must be one of them; with `comp` (a Competition), one it can read (Competition.bad_labels)."""
    if not folds_csv.is_file():
        raise NcfmError(f"{folds_csv}: folds manifest not found; run `ncfm split_train_val` first "
                        f"(or pass --folds-csv)")
    try:
        df = pd.read_csv(folds_csv, dtype={"image": str, "label": str}, keep_default_na=False)
    except Exception as e:  # pandas raises many types for unreadable CSVs
        raise NcfmError(f"{folds_csv}: cannot read it as CSV ({e}); rerun `ncfm split_train_val --force`") from None
    missing = {"image", "label", "fold"} - set(df.columns)
    if missing:
        raise NcfmError(f"{folds_csv}: missing columns {sorted(missing)}; expected image,label,fold[,group]")
    if not pd.api.types.is_integer_dtype(df.fold):
        raise NcfmError(f"{folds_csv}: the fold column must hold whole numbers; rerun `ncfm split_train_val --force`")
    unknown = sorted(set(df.label) - set(classes)) if classes is not None else []
    if comp is not None and (bad := comp.bad_labels(df.label)):
        raise NcfmError(f"{folds_csv}: label(s) that the competition ({comp.kind}) cannot read: {bad[:5]}; rerun "
                        f"`ncfm split_train_val --force`")
    if unknown:
        raise NcfmError(f"{folds_csv}: unknown labels {unknown[:10]}; the competition's classes are "
                        f"{', '.join(classes)}; rerun `ncfm split_train_val --force`")
    folds = sorted(df.fold.unique())
    if fold is not None and fold not in folds:
        raise NcfmError(f"received fold={fold}, but {folds_csv} has folds {folds[0]}..{folds[-1]}")
    return df.reset_index(drop=True), len(folds)


# --------------------------------------------------------------------------- command
def main(args) -> int:
    """`ncfm split_train_val`: read the layout, decode-check, group, split; write folds.csv,
    folds.json and competition.json."""
    import sys

    from ncfm.dataset import check_images, describe_competition

    data_dir = Path(args.data_dir)
    out = folds_csv_path(data_dir, args.out)
    if args.folds < 2:
        raise NcfmError(f"received --folds {args.folds}; k-fold needs at least 2 folds")
    comp, df = describe_competition(data_dir, train_dir=args.train_dir, test_dir=args.test_dir,
                                    labels_csv=args.labels_csv, id_column=args.id_column,
                                    label_column=args.label_column, slug=args.competition,
                                    task=getattr(args, "task", None), metric=getattr(args, "metric", None))
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
    emptied = sorted(set(df.label) - set(df.label[keep])) if comp.task == "single" else []
    if emptied:
        where = {"folders": [str(data_dir / comp.train["dir"] / c) for c in emptied],
                 "names": [f"{data_dir / comp.train['dir']}/{c}.*" for c in emptied]}.get(
            comp.train["source"], [f"class {c} of {data_dir / comp.train.get('csv', '')}" for c in emptied])
        raise NcfmError(f"no readable image left in {', '.join(where)}; every class needs at least one: "
                        f"replace the unreadable files listed above")
    df = df.assign(width=checked["width"].to_numpy(), height=checked["height"].to_numpy(),
                   thumb=checked["thumb"].to_numpy())[keep].reset_index(drop=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folds = assign_folds(df, n_folds=args.folds, seed=args.seed, groups=args.groups,
                             known_near_duplicates=competition.KNOWN_NEAR_DUPLICATES.get(comp.slug, ""),
                             progress=sys.stderr.isatty(), task=comp.task)
    used = folds.attrs["groups"]
    print(f"--groups {args.groups}: {folds.attrs['why']}")
    labels_from = data_dir / comp.train.get("csv", comp.train["dir"])
    for w in caught:
        print(f"WARNING: {labels_from}: {w.message}", file=sys.stderr)

    text = folds[["image", "label", "fold", "group"]].to_csv(index=False, lineterminator="\n")
    gap, worst_fold, worst_class = folds.attrs["largest_share_gap"]
    meta = {
        "n_folds": args.folds, "seed": args.seed, "groups": used, "groups_asked": args.groups,
        "groups_why": folds.attrs["why"],
        "largest_share_gap": {"points": round(gap * 100, 1), "fold": worst_fold, "class": worst_class},
        "n_groups": int(folds["group"].nunique()), "n_images": len(folds),
        "skipped": [{"image": img, "error": err} for img, err in bad],
    }
    if used == "boat":
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

    print(f"{meta['n_images']} images in {meta['n_groups']} groups (--groups {used}), "
          f"{args.folds} folds, seed {args.seed}")
    print(task_fold_table(folds, comp).to_string())
    print(f"{out}: {status} (settings in {sidecar}; the competition in {described})")
    return 0
