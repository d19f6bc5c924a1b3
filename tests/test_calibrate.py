"""Kaggle's log-loss scorer, and temperature / floor calibration fitted on out-of-fold predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from ncfm.calibrate import (
    apply_floor, apply_temperature, calibrate, class_shares, fit_calibration, fit_floor, fit_temperature,
    held_out_loss, kaggle_log_loss, no_better, per_sample_log_loss, prior_margin, prior_score,
)

K = 8


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def random_probs(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, K, n), rng.dirichlet(np.ones(K), size=n)


def overconfident(n=20000, true_temperature=2.5, seed=0):
    """Labels drawn from softmax(z); predictions softmax(T z) are over-confident by a factor T."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.2, size=(n, K))
    truth = softmax(z)
    labels = (rng.random((n, 1)) > truth.cumsum(axis=1)).sum(axis=1)  # one draw per row
    return labels, softmax(true_temperature * z), truth


# ----------------------------------------------------------------------------- the scorer
def test_log_loss_matches_sklearn_on_normalised_probabilities():
    labels, probs = random_probs(500)
    assert kaggle_log_loss(labels, probs) == pytest.approx(log_loss(labels, probs, labels=range(K)), rel=1e-12)


def test_log_loss_divides_each_row_by_its_sum_like_kaggle():
    labels, probs = random_probs(50, seed=1)
    scale = np.random.default_rng(2).uniform(0.5, 4.0, size=(50, 1))
    assert kaggle_log_loss(labels, probs * scale) == pytest.approx(kaggle_log_loss(labels, probs), rel=1e-12)


def test_a_confident_wrong_answer_costs_34_5_not_infinity():
    wrong = np.eye(K)[[1]]  # all mass on BET, truth ALB
    assert kaggle_log_loss([0], wrong) == pytest.approx(-np.log(1e-15), rel=1e-12)
    assert kaggle_log_loss([0], wrong) == pytest.approx(34.539, abs=1e-3)
    assert kaggle_log_loss([1], wrong) == pytest.approx(0.0, abs=1e-12)  # clipped at 1 - 1e-15 too


def test_uniform_guess_scores_log_8():
    labels, _ = random_probs(20)
    assert kaggle_log_loss(labels, np.full((20, K), 1 / K)) == pytest.approx(np.log(K))  # 2.07944


def test_per_sample_losses_average_to_the_log_loss():
    labels, probs = random_probs(100, seed=3)
    assert per_sample_log_loss(labels, probs).mean() == pytest.approx(kaggle_log_loss(labels, probs))


def test_mismatched_shapes_are_an_error_naming_them():
    with pytest.raises(ValueError, match=r"\(3, 8\).*4 labels"):
        kaggle_log_loss([0, 1, 2, 3], np.full((3, K), 1 / K))


# ----------------------------------------------------------------------------- temperature
def test_temperature_one_changes_nothing_and_larger_flattens():
    _, probs = random_probs(10)
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-12)
    flat = apply_temperature(probs, 3.0)
    np.testing.assert_allclose(flat.sum(axis=1), 1.0)
    assert (flat.max(axis=1) < probs.max(axis=1)).all()
    assert (np.argmax(flat, axis=1) == np.argmax(probs, axis=1)).all()  # the ranking is kept


def test_fit_temperature_recovers_a_known_over_confidence_and_lowers_log_loss():
    labels, probs, truth = overconfident(true_temperature=2.5)
    t = fit_temperature(labels, probs)
    assert t == pytest.approx(2.5, rel=0.05)
    fixed = apply_temperature(probs, t)
    assert kaggle_log_loss(labels, fixed) < kaggle_log_loss(labels, probs) - 0.1
    assert kaggle_log_loss(labels, fixed) == pytest.approx(kaggle_log_loss(labels, truth), abs=0.01)


def test_fit_temperature_leaves_calibrated_predictions_alone():
    labels, _, truth = overconfident(true_temperature=1.0, seed=4)
    assert fit_temperature(labels, truth) == pytest.approx(1.0, rel=0.05)


# ----------------------------------------------------------------------------- floor
def test_floor_lifts_every_probability_and_keeps_rows_summing_to_one():
    _, probs = random_probs(100, seed=5)
    probs = np.where(probs < 0.05, 1e-9, probs)
    out = apply_floor(probs, 0.02)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert out.min() >= 0.02 / (1 + K * 0.02)  # floored, then renormalised


@pytest.mark.parametrize("floor", [-0.1, 1.0])
def test_floor_outside_0_1_is_an_error_echoing_it(floor):
    with pytest.raises(ValueError, match=f"received floor={floor}"):
        apply_floor(np.full((1, K), 1 / K), floor)


def test_fit_floor_rescues_confident_wrong_answers():
    labels, probs, _ = overconfident(n=2000, true_temperature=1.0, seed=6)
    probs = probs.copy()
    probs[:20] = np.eye(K)[(labels[:20] + 1) % K]  # 1% confidently wrong: 34.5 each
    f = fit_floor(labels, probs)
    assert 0.0 < f <= 0.1
    assert kaggle_log_loss(labels, apply_floor(probs, f)) < kaggle_log_loss(labels, probs) - 0.2


# ----------------------------------------------------------------------------- composition
def test_calibrate_applies_the_temperature_then_the_floor():
    _, probs = random_probs(30, seed=7)
    np.testing.assert_allclose(calibrate(probs, 2.0, 0.01), apply_floor(apply_temperature(probs, 2.0), 0.01))
    np.testing.assert_allclose(calibrate(probs * 3.0), probs, atol=1e-12)  # defaults only renormalise


@pytest.mark.parametrize("method", ["temperature", "floor", "both"])
def test_fit_calibration_fits_only_what_it_is_asked_and_never_makes_oof_worse(method):
    labels, probs, _ = overconfident(n=3000, true_temperature=2.0, seed=8)
    fit = fit_calibration(labels, probs, method)
    assert set(fit) == {"temperature", "floor", "before", "after"}
    assert fit["before"] == pytest.approx(kaggle_log_loss(labels, probs))
    assert fit["after"] == pytest.approx(kaggle_log_loss(labels, calibrate(probs, fit["temperature"], fit["floor"])))
    assert fit["after"] < fit["before"]
    if method == "temperature":
        assert fit["floor"] == 0.0 and fit["temperature"] > 1.5
    if method == "floor":
        assert fit["temperature"] == 1.0 and fit["floor"] > 0.0


def test_both_is_at_least_as_good_as_either_alone():
    labels, probs, _ = overconfident(n=3000, true_temperature=2.0, seed=9)
    probs[:15] = np.eye(K)[(labels[:15] + 1) % K]
    after = {m: fit_calibration(labels, probs, m)["after"] for m in ("temperature", "floor", "both")}
    assert after["both"] <= min(after["temperature"], after["floor"]) + 1e-6


def test_a_calibration_that_helps_held_out_folds_is_applied():
    labels, probs, _ = overconfident(n=3000, true_temperature=2.5, seed=10)
    groups = np.arange(len(labels)) % 5
    fit = fit_calibration(labels, probs, "temperature", groups=groups)
    assert fit["applied"] and fit["temperature"] > 1.5 and fit["held_out_by"] == "folds"
    assert fit["held_out"] == pytest.approx(held_out_loss(labels, probs, groups, "temperature"))
    assert fit["after"] < fit["held_out"] < fit["before"]


def test_a_calibration_that_only_fits_noise_of_these_rows_is_not_applied():
    # fold A's labels follow the predictions, fold B's are random: each fold's fit is wrong for
    # the other, though one temperature fitted on both still lowers their pooled log loss
    rng = np.random.default_rng(11)
    probs = softmax(rng.normal(0.0, 0.5, size=(80, K)))
    labels = np.concatenate([probs[:40].argmax(axis=1), rng.integers(0, K, 40)])
    groups = np.repeat(["fold0", "fold1"], 40)
    fitted = fit_calibration(labels, probs, "temperature")
    assert fitted["after"] < fitted["before"] and fitted["temperature"] != pytest.approx(1.0, abs=0.05)

    fit = fit_calibration(labels, probs, "temperature", groups=groups)
    assert not fit["applied"] and fit["held_out"] >= fit["before"]
    assert fit["temperature"] == 1.0 and fit["floor"] == 0.0 and fit["after"] == fit["before"]
    assert fit["rejected"]["temperature"] == pytest.approx(fitted["temperature"])


def test_one_group_is_checked_on_two_random_halves():
    labels, probs, _ = overconfident(n=2000, true_temperature=2.5, seed=12)
    fit = fit_calibration(labels, probs, "temperature", groups=np.zeros(len(labels)))
    halves = np.random.default_rng(0).permutation(len(labels)) % 2
    assert fit["applied"] and fit["held_out_by"] == "random halves"
    assert fit["held_out"] == pytest.approx(held_out_loss(labels, probs, halves, "temperature"))


def test_unknown_calibration_method_is_an_error_echoing_it():
    with pytest.raises(ValueError, match="received 'platt'"):
        fit_calibration([0], np.full((1, K), 1 / K), "platt")


# ----------------------------------------------------------------------------- against the class priors
def test_the_class_priors_score_is_that_of_predicting_the_training_shares_for_every_row():
    train = np.array([0, 0, 0, 1, 2, 2])  # counted with one more of each class: 4, 2, 3, 1 of 10
    shares = class_shares(train, 4)
    np.testing.assert_allclose(shares, [0.4, 0.2, 0.3, 0.1])  # class 3, never seen, is not given 0
    held_out = np.array([0, 1, 2, 2])
    assert prior_score("log_loss", held_out, shares) == pytest.approx(-np.mean(np.log([0.4, 0.2, 0.3, 0.3])))
    assert prior_score("accuracy", held_out, shares) == 0.25  # always the largest class, 0
    assert prior_score("roc_auc", held_out, shares, positive=2) == 0.5  # one score for every row ranks nothing


def test_no_better_than_the_priors_is_judged_in_the_metrics_own_direction():
    assert no_better("log_loss", 2.0794, 1.6461) and no_better("log_loss", 1.6461, 1.6461)
    assert not no_better("log_loss", 1.2, 1.6461)
    assert no_better("accuracy", 0.40, 0.45) and not no_better("accuracy", 0.60, 0.45)
    assert no_better("roc_auc", 0.5, 0.5) and not no_better("roc_auc", 0.8, 0.5)
    assert not no_better("roc_auc", float("nan"), 0.5)  # one class held out: nothing to judge


def test_a_model_level_with_the_priors_by_chance_is_not_counted_as_better():
    # 100 rows of class 0, priors 0.5/0.5: a model a little sharper on half the rows and a little
    # flatter on the other half is 0.006 better on average, well inside twice the standard error
    labels, shares = np.zeros(100, dtype=int), np.array([0.5, 0.5])
    p0 = np.where(np.arange(100) % 2 == 0, 0.55, 0.46)
    level = np.stack([p0, 1 - p0], axis=1)
    diff = -np.log(p0) - -np.log(0.5)
    margin = prior_margin("log_loss", labels, level, shares)
    assert margin == pytest.approx(2 * diff.std(ddof=1) / 10)
    value, baseline = kaggle_log_loss(labels, level), prior_score("log_loss", labels, shares)
    assert value < baseline and no_better("log_loss", value, baseline, margin)
    # the same edge on every row is no chance: no spread, so any gain counts
    sharp = np.tile([0.55, 0.45], (100, 1))
    assert prior_margin("log_loss", labels, sharp, shares) == pytest.approx(0.0, abs=1e-12)
    assert not no_better("log_loss", kaggle_log_loss(labels, sharp), baseline,
                         prior_margin("log_loss", labels, sharp, shares))
    # accuracy is judged the same way (rows right or wrong); ROC AUC, no mean over rows, gets no margin
    assert prior_margin("accuracy", labels, level, shares) > 0
    assert prior_margin("roc_auc", labels, level, shares) == 0.0
    assert no_better("accuracy", 0.47, 0.45, margin=0.05) and not no_better("accuracy", 0.60, 0.45, margin=0.05)


def test_shrinkage_is_near_zero_for_a_model_worse_than_the_priors_and_one_for_a_good_one():
    from ncfm.calibrate import fit_shrinkage, shrink

    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=300, p=[0.6, 0.3, 0.1])
    shares = np.array([0.6, 0.3, 0.1])
    wrong = np.full((300, 3), 0.05)
    wrong[np.arange(300), (labels + 1) % 3] = 0.9  # confidently wrong
    good = np.full((300, 3), 0.05)
    good[np.arange(300), labels] = 0.9
    assert fit_shrinkage(labels, wrong, shares) < 0.01
    assert fit_shrinkage(labels, good, shares) > 0.99
    half = fit_shrinkage(labels, np.where(np.arange(300)[:, None] % 2 == 0, good, wrong), shares)
    assert 0.05 < half < 0.95
    np.testing.assert_allclose(shrink(good, shares, 0.3).sum(axis=1), 1.0)


# ----------------------------------------------------------------------------- other kinds of answer
@pytest.mark.parametrize("average", ["samples", "micro", "macro"])
def test_f_beta_agrees_with_scikit_learn(average):
    from sklearn.metrics import fbeta_score

    from ncfm.calibrate import f_beta

    rng = np.random.default_rng(0)
    for beta in (1.0, 2.0):
        truth, predicted = rng.random((60, 7)) < 0.3, rng.random((60, 7)) < 0.4
        truth[0], predicted[0] = False, False  # an image with no label and none predicted
        truth[:, 6], predicted[:, 6] = False, False  # a label never true and never predicted
        expected = fbeta_score(truth, predicted, beta=beta, average=average, zero_division=0)
        assert f_beta(truth, predicted, beta, average) == pytest.approx(expected, abs=1e-12)


def test_rmse_and_quadratic_kappa_agree_with_scikit_learn():
    from sklearn.metrics import cohen_kappa_score, mean_squared_error

    from ncfm.calibrate import quadratic_kappa, rmse

    rng = np.random.default_rng(1)
    truth, predicted = rng.uniform(0, 100, 200), rng.uniform(0, 100, 200)
    assert rmse(truth, predicted) == pytest.approx(np.sqrt(mean_squared_error(truth, predicted)), rel=1e-12)
    for grades in ([0, 1, 2, 3, 4], [0, 1, 3, 4]):  # a grade nobody has: scikit-learn's spacing
        a, b = rng.choice(grades, 150), np.clip(rng.choice(grades, 150) + rng.integers(-1, 2, 150), 0, 4)
        assert quadratic_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"), abs=1e-12)
    assert quadratic_kappa([0, 1, 2, 3], [0, 1, 2, 3]) == pytest.approx(1.0)


def test_label_thresholds_fitted_on_oof_beat_a_fixed_half_where_they_must():
    from ncfm.calibrate import fit_label_thresholds

    rng = np.random.default_rng(2)
    truth = rng.random((400, 5)) < 0.3
    # ranked well but low: every true label below 0.5; label 4 on a scale of its own, all above 0.4
    probs = np.where(truth, rng.uniform(0.2, 0.45, truth.shape), rng.uniform(0.0, 0.25, truth.shape))
    probs[:, 4] = np.where(truth[:, 4], rng.uniform(0.7, 0.9, len(truth)), rng.uniform(0.4, 0.6, len(truth)))
    fit = fit_label_thresholds(truth, probs, beta=2.0)
    assert fit["at_global"] > fit["at_0.5"] + 0.2
    assert fit["at_per_label"] > fit["at_global"] + 0.01
    assert 0.6 <= fit["per_label"][4] <= 0.7 and fit["global"] < 0.45


def test_grade_cuts_fitted_on_oof_beat_plain_rounding_where_they_must():
    from ncfm.calibrate import fit_grade_thresholds, grades_of, quadratic_kappa

    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, 500)
    values = 0.6 * truth + 0.4 + rng.normal(0, 0.15, 500)  # a regressor that squeezes the grades together
    fit = fit_grade_thresholds(truth, values, n_grades=5)
    assert fit["fitted"] > fit["rounded"] + 0.05
    assert fit["fitted"] == pytest.approx(quadratic_kappa(truth, grades_of(values, fit["cuts"])))
    assert list(fit["cuts"]) == sorted(fit["cuts"])
