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
from ncfm.folds import assign_folds, boat_groups


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
    assert {k: meta[k] for k in ("n_folds", "seed", "groups", "n_images", "skipped")} == {
        "n_folds": 5, "seed": 2016, "groups": "boat", "n_images": 160, "skipped": []}
    assert meta["n_groups"] == folds["group"].nunique()
    assert "label  ALB  BET" in out and "groups" in out


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
