"""Detect, crop, classify -> class probabilities; blend weights fitted on OOF."""

import numpy as np
import pytest

from ncfm import combine, ensemble

CLASSES = ["ALB", "BET", "NoF"]


def test_combined_probabilities_put_the_fish_share_on_the_crop_classes():
    p_fish = np.array([0.9, 0.2])
    crop = np.array([[0.75, 0.25], [0.5, 0.5]])
    out = combine.combine(p_fish, crop, CLASSES, ["ALB", "BET"], ["NoF"])
    np.testing.assert_allclose(out, [[0.675, 0.225, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


def test_fish_probability_rises_with_the_detector_score_and_is_calibrated():
    rng = np.random.default_rng(0)
    fish = rng.random(400) < 0.7
    scores = np.where(fish, rng.uniform(0.2, 0.6, 400), rng.uniform(0.0, 0.3, 400))
    fit = combine.fit_fish_probability(scores, fish)
    p = combine.fish_probability(np.array([0.05, 0.25, 0.5]), fit)
    assert p[0] < p[1] < p[2]
    assert p[0] < 0.1 and p[2] > 0.9
    # calibrated: the mean P(fish) matches the share of fish images it was fitted on
    assert abs(combine.fish_probability(scores, fit).mean() - fish.mean()) < 0.02


def test_nothing_found_counts_as_the_lowest_score():
    fit = combine.fit_fish_probability([0.0, 0.0, 0.8, 0.9], [False, False, True, True])
    assert combine.fish_probability([np.nan], fit)[0] == pytest.approx(combine.fish_probability([0.0], fit)[0])


def test_run_weights_prefer_the_better_run_and_sum_to_one():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    good = np.full((300, 3), 0.1)
    good[np.arange(300), y] = 0.8
    noise = rng.dirichlet(np.ones(3), 300)
    w = ensemble.fit_weights([noise, good], y)
    assert w.sum() == pytest.approx(1.0)
    assert (w >= 0).all() and w[1] > 0.9


def test_run_weights_blend_two_runs_that_err_on_different_images():
    y = np.array([0, 1] * 50)
    a = np.where(np.arange(100)[:, None] % 4 == 0, [[0.1, 0.9]], np.eye(2)[y] * 0.8 + 0.1)
    b = np.where(np.arange(100)[:, None] % 4 == 1, [[0.9, 0.1]], np.eye(2)[y] * 0.8 + 0.1)
    w = ensemble.fit_weights([a, b], y)
    assert 0.3 < w[0] < 0.7  # neither alone is best


def test_crops_of_several_boxes_combine_by_score_and_sum_to_one():
    from ncfm.combine import combine_boxes

    crop = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7], [0.6, 0.4]])
    image_of = np.array([0, 0, 1, 2, 2])
    scores = np.array([0.6, 0.2, 0.0, 0.0, 0.0])  # image 2: nothing scored, its crops count alike
    out = combine_boxes(crop, image_of, scores, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_allclose(out[0], (0.6 * crop[0] + 0.2 * crop[1]) / 0.8)
    np.testing.assert_allclose(out[1], crop[2])
    np.testing.assert_allclose(out[2], (crop[3] + crop[4]) / 2)
    with pytest.raises(ValueError, match="no crop"):
        combine_boxes(crop, image_of, scores, 4)


def test_the_confidence_blend_trusts_crops_where_the_detector_is_sure_and_never_fits_worse_than_one_weight():
    from ncfm.combine import box_weight, fit_confidence_blend
    from ncfm.ensemble import fit_weights

    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    scores = rng.uniform(0.01, 0.99, n)
    right = np.where(rng.random(n) < scores, y, 1 - y)  # crops right where the detector is sure
    crop = np.where(right[:, None] == np.arange(2), 0.9, 0.1)
    whole = np.full((n, 2), 0.5)
    whole[np.arange(n), y] = 0.65
    fit = fit_confidence_blend(crop, whole, scores, y)
    assert fit["a"] > 0 and box_weight(np.array([0.95]), fit)[0] > box_weight(np.array([0.05]), fit)[0]
    w = fit_weights([crop, whole], y)[0]
    flat = -np.mean(np.log((w * crop + (1 - w) * whole)[np.arange(n), y]))
    assert fit["oof_log_loss"] <= flat + 1e-6
