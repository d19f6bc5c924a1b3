"""folds.py: boat groups, stratified group k-fold, and the split_train_val command's manifest."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from ncfm import NcfmError
from ncfm.competition import NCFM_CLASSES as CLASSES
from ncfm.cli import main as cli_main
from ncfm.dataset import check_images, find_train_images
from ncfm.folds import SHARE_TOLERANCE, assign_folds, balance_groups, boat_groups, share_drift


@pytest.fixture(scope="module")
def checked(synthetic_data) -> pd.DataFrame:
    """The synthetic training set with sizes, thumbnails and the true boat of each image."""
    df = find_train_images(synthetic_data)
    c = check_images([synthetic_data / p for p in df["image"]], workers=1, progress=False)
    df = df.assign(width=c["width"], height=c["height"], thumb=c["thumb"])
    boats = pd.read_csv(synthetic_data / "train_boats.csv")
    return df.merge(boats, on="image", validate="one_to_one")


def split(checked, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return assign_folds(checked, **kw)


def test_boat_proxy_puts_each_synthetic_boat_in_exactly_one_group(checked):
    groups = boat_groups(checked)
    per_boat = pd.Series(groups).groupby(checked["boat"].to_numpy()).nunique()
    assert (per_boat == 1).all(), f"boats split across groups: {per_boat[per_boat > 1].to_dict()}"
    per_group = checked["boat"].groupby(groups).nunique()
    assert (per_group == 1).all(), "one group mixes several boats"


def test_groups_never_span_two_folds(checked):
    folds = split(checked, n_folds=5, seed=2016, groups="boat")
    assert (folds.groupby("group")["fold"].nunique() == 1).all()
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]


def test_boat_folds_keep_every_boat_in_one_fold(checked):
    folds = split(checked, n_folds=5, groups="boat")
    assert (folds.groupby("boat")["fold"].nunique() == 1).all()


def test_plain_stratified_folds_leak_boats_across_folds(checked):
    folds = split(checked, n_folds=5, groups="none")
    leaking = (folds.groupby("boat")["fold"].nunique() > 1).sum()
    assert leaking == folds["boat"].nunique(), "with groups=none every boat has frames in several folds"


def test_size_groups_are_image_sizes(checked):
    folds = split(checked, n_folds=3, groups="size")
    assert (folds.groupby("group")[["width", "height"]].nunique() == 1).all().all()
    assert folds["group"].nunique() == len(set(zip(checked["width"], checked["height"])))


def test_stratified_folds_balance_every_class_within_one_image(checked):
    folds = split(checked, n_folds=5, groups="none")
    counts = pd.crosstab(folds["label"], folds["fold"])
    assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 1


def test_many_small_groups_give_nearly_even_class_counts():
    rng = np.random.default_rng(0)
    n_groups = 150  # groups of 3 frames, one class each, classes imbalanced like NCFM
    labels = rng.choice(CLASSES, size=n_groups, p=[.45, .06, .04, .04, .12, .08, .05, .16])
    df = pd.DataFrame({
        "image": [f"train/{c}/img_{g:03d}_{k}.jpg" for g, c in enumerate(labels) for k in range(3)],
        "label": np.repeat(labels, 3),
        "width": np.repeat(np.arange(n_groups) + 100, 3),  # one size per group
        "height": 50,
    })
    folds = split(df, n_folds=5, groups="size")
    assert (folds.groupby("group")["fold"].nunique() == 1).all()
    counts = pd.crosstab(folds["label"], folds["fold"])
    assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 6  # two groups of 3


def test_group_ids_are_numbered_in_image_order(checked):
    folds = split(checked.sample(frac=1, random_state=1), n_folds=5)
    first_seen = folds.drop_duplicates("group")["group"].tolist()
    assert first_seen == list(range(len(first_seen)))
    assert folds["image"].is_monotonic_increasing


def test_fewer_than_two_folds_is_refused(checked):
    with pytest.raises(NcfmError, match="received folds=1"):
        assign_folds(checked, n_folds=1)


def test_more_folds_than_groups_is_refused(checked):
    with pytest.raises(NcfmError, match=r"only \d+ group\(s\)"):
        assign_folds(checked, n_folds=40, groups="boat")


def test_a_class_with_fewer_groups_than_folds_warns(checked):
    with pytest.warns(UserWarning, match="fewer groups than folds"):
        assign_folds(checked, n_folds=10, groups="boat")


# --------------------------------------------------------------------------- groups only where real
def look_alike_classes(n_classes=8, per_class=30, seed=0):
    """Images of one size whose thumbnails cluster by class: every image of a class is its class's
    picture plus a little noise (as Fashion-MNIST's trousers are all alike), no near-duplicate scenes."""
    rng = np.random.default_rng(seed)
    pictures = rng.uniform(0, 255, size=(n_classes, 18, 32))
    labels = np.repeat([f"c{i}" for i in range(n_classes)], per_class)
    thumbs = [np.clip(pictures[i] + rng.normal(0, 12, (18, 32)), 0, 255)
              for i in range(n_classes) for _ in range(per_class)]
    order = rng.permutation(len(labels))
    df = pd.DataFrame({"image": [f"train/{k:04d}.png" for k in range(len(labels))], "label": labels[order],
                       "width": 28, "height": 28})
    return df, [thumbs[i] for i in order]


def test_look_alike_classes_get_stratified_folds_without_groups():
    df, thumbs = look_alike_classes()
    assert boat_groups(df, thumbs).max() < 20, "the test's premise: the boat proxy clusters these by class"
    folds = split(df, n_folds=3, features=thumbs)
    assert folds.attrs["groups"] == "none" and "follow the classes" in folds.attrs["why"]
    counts = pd.crosstab(folds["label"], folds["fold"])
    assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 1
    assert share_drift(folds)[0] <= SHARE_TOLERANCE


def test_forcing_boat_groups_on_look_alike_classes_warns_loudly():
    df, thumbs = look_alike_classes()
    with pytest.warns(UserWarning, match="follow the classes") as caught:
        folds = assign_folds(df, n_folds=3, groups="boat", features=thumbs)
    assert folds.attrs["groups"] == "boat"
    assert any("unbalance the folds" in str(w.message) for w in caught)


def test_frames_of_a_few_boats_still_get_boat_groups_from_the_data_alone(checked):
    folds = split(checked, n_folds=3)  # no competition named: the data decide
    assert folds.attrs["groups"] == "boat" and "near-duplicate" in folds.attrs["why"]
    assert (folds.groupby("boat")["fold"].nunique() == 1).all()


def test_a_competition_known_for_near_duplicates_is_grouped(checked):
    folds = split(checked, n_folds=3, known_near_duplicates="frames of videos from a few boats")
    assert folds.attrs["groups"] == "boat" and "frames of videos" in folds.attrs["why"]


def test_images_without_near_duplicates_get_no_groups():
    rng = np.random.default_rng(1)
    thumbs = [rng.uniform(0, 255, (18, 32)) for _ in range(60)]  # nothing alike
    df = pd.DataFrame({"image": [f"{k:03d}.jpg" for k in range(60)], "label": np.tile(["a", "b", "c"], 20),
                       "width": 64, "height": 64})
    folds = split(df, n_folds=3, features=thumbs)
    assert folds.attrs["groups"] == "none" and "no near-duplicates" in folds.attrs["why"]


def test_balancing_moves_whole_groups_towards_the_class_shares():
    # 6 groups of one class each; the start puts both "a" groups in fold 0
    counts = np.array([[10, 0], [10, 0], [0, 10], [0, 10], [5, 5], [5, 5]])
    start = np.array([0, 0, 1, 1, 2, 2])
    fold_of = balance_groups(counts, start, 3)
    per_fold = np.zeros((3, 2))
    np.add.at(per_fold, fold_of, counts)
    assert (per_fold == [[10, 10]] * 3).all(), per_fold


def test_balancing_never_empties_a_fold():
    counts = np.array([[100, 0], [1, 0], [0, 1]])
    fold_of = balance_groups(counts, np.array([0, 1, 2]), 3)
    assert sorted(set(fold_of.tolist())) == [0, 1, 2]


def test_boat_folds_keep_class_shares_closer_than_the_greedy_split_alone(checked):
    from sklearn.model_selection import StratifiedGroupKFold

    folds = split(checked, n_folds=5, groups="boat")
    greedy = folds.copy()
    for k, (_, test) in enumerate(StratifiedGroupKFold(5, shuffle=True, random_state=2016).split(
            greedy, greedy["label"], greedy["group"])):
        greedy.loc[test, "fold"] = k
    assert share_drift(folds)[0] <= share_drift(greedy)[0]
    assert (folds.groupby("group")["fold"].nunique() == 1).all()


# --------------------------------------------------------------------------- the command
def split_cli(data, *flags):
    return cli_main(["split_train_val", "--data-dir", str(data), "--workers", "1", *flags])


def test_split_writes_manifest_sidecar_and_table(synthetic_copy, capsys):
    assert split_cli(synthetic_copy) == 0
    out = capsys.readouterr().out
    folds = pd.read_csv(synthetic_copy / "folds.csv")
    assert list(folds.columns) == ["image", "label", "fold", "group"]
    assert folds["image"].is_monotonic_increasing and len(folds) == 160
    meta = json.loads((synthetic_copy / "folds.json").read_text())
    assert {k: meta[k] for k in ("n_folds", "seed", "groups", "groups_asked", "n_images", "skipped")} == {
        "n_folds": 5, "seed": 2016, "groups": "boat", "groups_asked": "auto", "n_images": 160, "skipped": []}
    assert meta["n_groups"] == folds["group"].nunique()
    assert "frames of videos" in meta["groups_why"] and meta["largest_share_gap"]["points"] >= 0
    assert "label  ALB  BET" in out and "--groups auto: boat groups" in out


def test_same_seed_gives_a_byte_identical_csv_and_says_unchanged(synthetic_copy, capsys):
    assert split_cli(synthetic_copy, "--out", str(synthetic_copy / "a.csv")) == 0
    assert split_cli(synthetic_copy, "--out", str(synthetic_copy / "b.csv"), "--workers", "2") == 0
    assert (synthetic_copy / "a.csv").read_bytes() == (synthetic_copy / "b.csv").read_bytes()
    capsys.readouterr()
    assert split_cli(synthetic_copy, "--out", str(synthetic_copy / "a.csv")) == 0
    assert "a.csv: unchanged" in capsys.readouterr().out


def test_a_different_split_over_an_existing_manifest_needs_force(synthetic_copy, capsys):
    assert split_cli(synthetic_copy) == 0
    before = (synthetic_copy / "folds.csv").read_bytes()
    assert split_cli(synthetic_copy, "--folds", "4") == 2
    assert "pass --force" in capsys.readouterr().err
    assert (synthetic_copy / "folds.csv").read_bytes() == before
    assert split_cli(synthetic_copy, "--folds", "4", "--force") == 0
    assert (synthetic_copy / "folds.csv").read_bytes() != before
    assert json.loads((synthetic_copy / "folds.json").read_text())["n_folds"] == 4


def test_one_fold_exits_2(synthetic_copy, capsys):
    assert split_cli(synthetic_copy, "--folds", "1") == 2
    assert "received --folds 1" in capsys.readouterr().err


# --------------------------------------------------------------------------- big competitions
def scenes(n_scenes=30, per_scene=150, n_unique=1500, side=256, seed=0):
    """Flat luminance vectors of one image size: n_scenes cameras, each seen per_scene times with
    noise (frames), plus n_unique images like no other; (features, scene of each or -1)."""
    rng = np.random.default_rng(seed)
    pictures = rng.uniform(0, 255, (n_scenes, side))
    scene = np.r_[np.repeat(np.arange(n_scenes), per_scene), np.full(n_unique, -1)]
    x = np.where(scene[:, None] >= 0, pictures[np.maximum(scene, 0)], rng.uniform(0, 255, (len(scene), side)))
    x = x + rng.normal(0, 10, x.shape)
    order = rng.permutation(len(scene))
    return x[order].astype(np.float32), scene[order]


def test_grouping_in_rounds_keeps_each_synthetic_boat_in_one_group(checked):
    exact = boat_groups(checked)
    in_rounds = boat_groups(checked, sample=8)  # every size bucket (up to 46 frames) goes in rounds of 8
    assert (in_rounds == exact).all(), "rounds changed the groups of the synthetic boats"
    assert (checked["boat"].groupby(in_rounds).nunique() == 1).all()


def test_grouping_in_rounds_gives_the_same_folds(checked, monkeypatch):
    import ncfm.folds

    exact = split(checked, n_folds=5, groups="boat")
    monkeypatch.setattr(ncfm.folds, "SAMPLE", 8)
    in_rounds = split(checked, n_folds=5, groups="boat")
    pd.testing.assert_frame_equal(exact[["image", "fold", "group"]], in_rounds[["image", "fold", "group"]])


def test_grouping_memory_grows_with_the_images_not_their_pairs():
    import tracemalloc

    x, scene = scenes()  # 6,000 images: every pair of them would be 18 million distances, 144 MB
    df = pd.DataFrame({"width": np.full(len(x), 16), "height": np.full(len(x), 16)})
    boat_groups(df[:300], x[:300], sample=256)  # imports done before measuring
    tracemalloc.start()
    try:
        groups = boat_groups(df, x, sample=256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2 ** 20, f"grouping 6,000 images peaked at {peak / 2 ** 20:.1f} MB"  # 15 MB on 2026-12-05
    framed = scene >= 0
    assert (pd.Series(groups[framed]).groupby(scene[framed]).nunique() == 1).all(), "a camera split in two"
    assert (pd.Series(scene[framed]).groupby(groups[framed]).nunique() == 1).all(), "two cameras joined"
    assert len(np.unique(groups[~framed])) > 0.9 * (~framed).sum(), "images like no other were grouped"


def test_blank_frames_are_grouped_not_fatal():
    rng = np.random.default_rng(2)
    thumbs = [rng.uniform(0, 255, (18, 32)) for _ in range(6)] + [np.zeros((18, 32))] * 3
    df = pd.DataFrame({"width": np.full(9, 64), "height": np.full(9, 64)})
    groups = boat_groups(df, thumbs)
    assert len(set(groups[6:])) == 1 and len(set(groups[:6])) == 6


def test_grouping_shows_progress_when_asked(checked, capsys):
    boat_groups(checked, progress=True)
    assert "grouping" in capsys.readouterr().err
