"""task.py and what it touches: several labels per image, a number, an ordered grade, from the labels
CSV to the validated CSV (competition.json's task, folds, targets, the answer rule fitted on OOF)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import write_image
from ncfm import task
from ncfm.cli import main as cli_main
from ncfm.competition import Competition
from ncfm.folds import iterative_folds, strata
from ncfm.submission import build_submission, find_problems, format_submission

TAGS = Competition(classes=("clear", "haze", "primary", "water"), kind="multilabel", metric="f2_samples",
                   id_column="image_name", columns=("tags",), separator=" ")
SCORE = Competition(classes=("Pawpularity",), kind="regression", metric="rmse", id_column="Id",
                    columns=("Pawpularity",), value_range=(1.0, 100.0))
GRADE = Competition(classes=("diagnosis",), kind="ordinal", metric="qwk", id_column="id_code",
                    columns=("diagnosis",), grades=(0, 1, 2, 3, 4))


# --------------------------------------------------------------------------- targets and answers
def test_targets_are_multi_hot_labels_or_the_scaled_number_or_grade():
    assert task.targets(TAGS, ["haze primary", "water"]).tolist() == [[0, 1, 1, 0], [0, 0, 0, 1]]
    assert task.targets(SCORE, ["1", "100", "50.5"]).ravel().tolist() == [0.0, 1.0, 0.5]
    assert task.targets(GRADE, ["0", "2", "4"]).ravel().tolist() == [0.0, 0.5, 1.0]
    assert task.unscaled(SCORE, task.targets(SCORE, ["37"])).tolist() == pytest.approx([37.0], abs=1e-5)


def test_decided_answers_have_a_label_each_clip_numbers_and_round_grades():
    labels = task.decide(TAGS, [[0.9, 0.1, 0.6, 0.2], [0.1, 0.3, 0.2, 0.05]])
    assert task.values_for_csv(TAGS, labels) == ["clear primary", "haze"]  # none passed 0.5: the likeliest
    with pytest.raises(ValueError, match="whitespace separator"):
        Competition(classes=("a", "b"), kind="multilabel", metric="f2_samples", columns=("tags",), separator=",")
    assert task.decide(SCORE, [[0.0], [1.0], [0.5]]).tolist() == [1.0, 100.0, 50.5]
    assert task.decide(GRADE, [[0.0], [0.13], [0.49], [1.0]]).tolist() == [0, 1, 2, 4]
    assert task.decide(GRADE, [[0.3]], {"cuts": [0.2, 2.0, 3.0, 3.5]}).tolist() == [1]


def test_baselines_ignore_the_image():
    train = ["primary", "primary clear", "primary haze", "primary"]
    # primary is on every training image: the baseline answers primary for every image
    assert task.baseline(TAGS, train, ["primary", "clear"]) == pytest.approx((1 + 0) / 2)
    assert task.baseline(SCORE, ["10", "30"], ["20", "20"]) == pytest.approx(0.0)
    assert task.baseline(GRADE, ["0", "0", "2"], ["0", "2"]) == pytest.approx(0.0)  # one grade: kappa 0


def test_the_image_blind_answer_gets_its_rule_fitted_as_a_models_would():
    rng = np.random.default_rng(0)
    labels = [" ".join(t for t, p in zip(TAGS.classes, (0.35, 0.3, 0.95, 0.3)) if rng.random() < p) or "primary"
              for _ in range(300)]
    blind = task.blind_scores(TAGS, labels, np.arange(300) % 3, labels[:50])
    # at 0.5 it names primary alone; F2 rewards also naming the labels a third of the images have
    assert blind["chosen"] == "global" and blind["held_out"] > blind["fixed"] + 0.05
    numbers = [str(v) for v in rng.integers(1, 101, 90)]
    blind = task.blind_scores(SCORE, numbers, np.arange(90) % 3, numbers[:10])
    assert blind["chosen"] == "fixed" and blind["held_out"] == pytest.approx(blind["fixed"])
    assert blind["test"] == pytest.approx(task.baseline(SCORE, numbers, numbers[:10]))


def _oof(rng, n=600):
    """OOF rows of 3 folds whose outputs carry the truth but are off the fixed rule's scale: a label's
    probability is about 0.3 where the image has it, about 0.1 where not; grades are squeezed down."""
    truth = rng.random((n, 4)) < [0.7, 0.2, 0.9, 0.3]
    truth[~truth.any(axis=1), 2] = True
    probs = np.clip(np.where(truth, 0.3, 0.1) + rng.normal(0, 0.05, truth.shape), 0, 1)
    labels = [" ".join(np.asarray(TAGS.classes)[row]) for row in truth]
    grades = rng.integers(0, 5, n)
    outputs = np.clip(grades / 4 * 0.6 + rng.normal(0, 0.04, n), 0, 1)[:, None]
    return labels, probs, [str(g) for g in grades], outputs, np.arange(n) % 3


def test_fitted_thresholds_and_cut_points_beat_the_fixed_rule_on_held_out_folds():
    labels, probs, grades, outputs, folds = _oof(np.random.default_rng(0))
    fitted = task.fit_answer(TAGS, labels, probs, folds)
    scores = fitted["scores"]
    assert fitted["chosen"] in ("global", "per_label")
    assert scores[fitted["chosen"]]["held_out"] > scores["fixed"]["held_out"] + 0.2
    assert 0.1 < fitted["rule"]["thresholds"][0] < 0.3
    graded = task.fit_answer(GRADE, grades, outputs, folds)
    assert graded["chosen"] == "cuts"
    assert graded["scores"]["cuts"]["held_out"] > graded["scores"]["fixed"]["held_out"] + 0.1
    assert task.score(GRADE, grades, outputs, graded["rule"]) == pytest.approx(graded["scores"]["cuts"]["on_oof"])
    one_fold = np.zeros(len(folds))  # nothing held out: the fallback, however well the rest fit
    assert task.fit_answer(GRADE, grades, outputs, one_fold)["chosen"] == task.FALLBACK["ordinal"] == "fixed"


def test_a_richer_rule_that_only_fits_noise_is_not_chosen():
    rng = np.random.default_rng(1)
    n = 300
    labels = [" ".join(t for t in TAGS.classes if rng.random() < 0.5) or "clear" for _ in range(n)]
    fitted = task.fit_answer(TAGS, labels, rng.random((n, 4)), np.arange(n) % 3)
    per_label, fallback = fitted["scores"]["per_label"], fitted["scores"]["global"]
    assert per_label["on_oof"] >= fallback["on_oof"]  # fitted on everything it always looks better
    if fitted["chosen"] == "per_label":
        assert per_label["held_out"] > fallback["held_out"]


# --------------------------------------------------------------------------- folds
def test_iterative_folds_keep_every_labels_share_where_one_class_per_image_could_not():
    rng = np.random.default_rng(0)
    tags = (rng.random((400, 6)) < [0.9, 0.5, 0.2, 0.08, 0.05, 0.03]).astype(float)
    fold = iterative_folds(tags, np.ones(400), 4, seed=0)
    per_fold = np.stack([tags[fold == k].sum(axis=0) for k in range(4)])
    assert (np.bincount(fold) >= 95).all() and (np.bincount(fold) <= 105).all()
    assert (per_fold.max(axis=0) - per_fold.min(axis=0) <= 2).all(), per_fold  # every label within 2 images


def test_groups_stay_in_one_fold_and_numbers_are_stratified_by_bins(tmp_path):
    from ncfm.folds import assign_folds

    rng = np.random.default_rng(0)
    n = 200
    tags = [" ".join(t for t, p in zip(TAGS.classes, (0.6, 0.3, 0.95, 0.1)) if rng.random() < p) or "primary"
            for _ in range(n)]
    df = pd.DataFrame({"image": [f"train/{i:04d}.jpg" for i in range(n)], "label": tags,
                       "width": 32, "height": 32})
    df["group_true"] = np.arange(n) // 4
    folds = assign_folds(df.assign(width=df.group_true), n_folds=4, groups="size", task="multilabel")
    assert folds.groupby("group")["fold"].nunique().max() == 1
    assert sorted(folds["label"]) == sorted(tags)
    shares = folds["label"].str.get_dummies(sep=" ").groupby(folds["fold"]).mean()
    assert (shares.max() - shares.min()).max() < 0.15
    values = pd.Series([str(v) for v in rng.integers(1, 101, n)])
    assert strata(values, "regression").nunique() == 10


def test_a_multilabel_split_warns_about_each_label_not_about_rarest_label_strata():
    from ncfm.folds import assign_folds

    tags = ["primary clear"] * 40 + ["primary haze"] * 20 + ["primary water"] * 2
    df = pd.DataFrame({"image": [f"train/{i:03d}.jpg" for i in range(len(tags))], "label": tags,
                       "width": 32, "height": 32})
    with pytest.warns(UserWarning) as caught:
        assign_folds(df, n_folds=3, groups="none", task="multilabel")
    said = " ".join(str(w.message) for w in caught)
    assert "fewer images than folds for water (2)" in said
    assert "primary" not in said  # on every image, though the rarest label of none


# --------------------------------------------------------------------------- the CSV
def test_build_and_validate_each_kind():
    tags = build_submission(["a", "b"], [[0.9, 0.1, 0.8, 0.0], [0.0, 0.0, 0.1, 0.7]], TAGS)
    assert tags["tags"].tolist() == ["clear primary", "water"]
    assert find_problems(tags, ["a", "b"], TAGS) == []
    numbers = build_submission(["a"], [[0.5]], SCORE)
    assert format_submission(numbers, SCORE).splitlines() == ["Id,Pawpularity", "a,50.500000000"]
    grades = build_submission(["a", "b"], [[0.1], [0.9]], GRADE)
    assert format_submission(grades, GRADE).splitlines() == ["id_code,diagnosis", "a,0", "b,4"]


@pytest.mark.parametrize("comp,values,said", [
    (TAGS, ["clear primary", ""], "1 row without a label"),
    (TAGS, ["clear Primary", "haze"], "'Primary' should be 'primary'"),
    (TAGS, ["clear clear", "haze"], "naming a label twice"),
    (GRADE, ["5", "1"], "grade out of range (grades are 0, 1, 2, 3, 4): line 2 (a) diagnosis='5'"),
    (GRADE, ["1.5", "1"], "value that is not a whole grade"),
    (GRADE, ["", "1"], "empty value"),
    (SCORE, ["nan", "3"], "NaN value"),
    (SCORE, ["inf", "3"], "infinite value"),
    (SCORE, ["abc", "3"], "value that is not a number"),
])
def test_validate_refuses_bad_answers_naming_the_line(comp, values, said):
    df = pd.DataFrame({comp.id_column: ["a", "b"], comp.columns[0]: values})
    problems = find_problems(df, ["a", "b"], comp)
    assert any(said in p for p in problems), problems


# --------------------------------------------------------------------------- reading the competition
def _competition_files(root, column, labels, sample_value, csv_name="train.csv", answer=None):
    n = len(labels)
    for i in range(n):
        write_image(root / "train" / f"im_{i}.jpg")
    write_image(root / "test" / "t_0.jpg")
    pd.DataFrame({"id": [f"im_{i}" for i in range(n)], column: labels}).to_csv(root / csv_name, index=False)
    (root / "sample_submission.csv").write_text(f"id,{answer or column}\nt_0,{sample_value}\n")


@pytest.mark.parametrize("column,labels,sample,kind,metric,shown", [
    ("tags", ["haze primary", "clear primary", "primary", "haze", "clear", "clear primary water", "haze water"] * 2,
     "primary clear", "multilabel", "f2_samples", "several labels per image (task multilabel), 4 labels"),
    ("Pawpularity", [str(v) for v in range(1, 41)], "50.0", "regression", "rmse",
     "a number per image (task regression): Pawpularity, 1 to 40"),
    ("diagnosis", ["0", "1", "2", "3", "4", "0", "0", "2"] * 2, "0", "ordinal", "qwk",
     "an ordered grade per image (task ordinal): diagnosis, 0, 1, 2, 3, 4"),
])
def test_the_task_is_read_from_the_labels_and_printed(tmp_path, column, labels, sample, kind, metric, shown, capsys):
    _competition_files(tmp_path, column, labels, sample)
    assert cli_main(["split_train_val", "--data-dir", str(tmp_path), "--folds", "2", "--groups", "none"]) == 0
    assert shown in capsys.readouterr().out
    saved = json.loads((tmp_path / "competition.json").read_text())
    assert (saved["kind"], saved["metric"]) == (kind, metric)
    folds = pd.read_csv(tmp_path / "folds.csv", dtype=str, keep_default_na=False)
    assert sorted(folds.label) == sorted(labels)


def test_task_and_metric_flags_decide_where_the_labels_cannot(tmp_path, capsys):
    _competition_files(tmp_path, "score", ["0", "1", "2", "1", "0", "2"] * 2, "2")
    assert cli_main(["split_train_val", "--data-dir", str(tmp_path), "--folds", "2", "--groups", "none"]) == 0
    assert json.loads((tmp_path / "competition.json").read_text())["kind"] == "label"  # digits as classes
    assert cli_main(["split_train_val", "--data-dir", str(tmp_path), "--folds", "2", "--groups", "none", "--force",
                     "--task", "ordinal"]) == 0
    assert json.loads((tmp_path / "competition.json").read_text())["grades"] == [0, 1, 2]
    capsys.readouterr()
    assert cli_main(["split_train_val", "--data-dir", str(tmp_path), "--force", "--task", "ordinal",
                     "--metric", "f2_micro"]) == 2
    assert "--metric f2_micro: not a metric of a ordinal competition; choose one of qwk" in capsys.readouterr().err


def test_a_known_slug_sets_the_task_and_metric(tmp_path):
    _competition_files(tmp_path, "attribute_ids", ["1 13", "13", "2 13", "1", "2", "1 2 13"] * 2, "1")
    # iMet's labels.csv names the attributes; train.csv, beside it, holds the images' labels
    (tmp_path / "labels.csv").write_text("attribute_id,attribute_name\n1,culture::a\n2,culture::b\n13,tag::c\n")
    assert cli_main(["split_train_val", "--data-dir", str(tmp_path), "--folds", "2", "--groups", "none",
                     "--competition", "imet-2019-fgvc6"]) == 0
    saved = json.loads((tmp_path / "competition.json").read_text())
    assert (saved["kind"], saved["metric"], saved["classes"]) == ("multilabel", "f2_micro", ["1", "13", "2"])


@pytest.mark.parametrize("labels,task_flag,said", [
    (["1", "2", "x", "4"] * 3, "regression", "3 label(s) of 'Pawpularity' are not numbers ('x')"),
    (["1", "2.5", "3", "4"] * 3, "ordinal", "grades must be whole numbers"),
])
def test_labels_the_task_cannot_read_are_refused_naming_the_file(tmp_path, labels, task_flag, said, capsys):
    _competition_files(tmp_path, "Pawpularity", labels, "1")
    assert cli_main(["split_train_val", "--data-dir", str(tmp_path), "--task", task_flag]) == 2
    err = capsys.readouterr().err
    assert said in err and "train.csv" in err
    assert not (tmp_path / "folds.csv").exists()


def test_a_multilabel_competition_with_probability_columns_is_refused(tmp_path, capsys):
    _competition_files(tmp_path, "tags", ["a b", "a", "b", "c", "a c", "b c"] * 2, "0.5")
    (tmp_path / "sample_submission.csv").write_text("id,a,b,c\nt_0,0.3,0.3,0.4\n")
    assert cli_main(["split_train_val", "--data-dir", str(tmp_path), "--task", "multilabel"]) == 2
    assert "3 answer columns, but a multilabel competition answers in one" in capsys.readouterr().err


# --------------------------------------------------------------------------- the journey of each kind
@pytest.mark.parametrize("layout,kind,column", [("planet", "multilabel", "tags"),
                                                ("pawpularity", "regression", "Pawpularity"),
                                                ("aptos", "ordinal", "diagnosis")])
def test_each_kind_from_make_synthetic_to_a_validated_csv_with_only_data_dir(tmp_path, layout, kind, column, capsys,
                                                                            monkeypatch):
    from conftest import TINY_TRAIN
    from ncfm import runs
    from ncfm.synthetic import make_synthetic

    data, run, out = tmp_path / "data", tmp_path / "runs" / layout, tmp_path / "sub.csv"
    make_synthetic(data, n_train=100, n_test1=10, boats=5, scale=0.1, layout=layout)
    assert cli_main(["split_train_val", "--data-dir", str(data), "--folds", "2"]) == 0
    comp = json.loads((data / "competition.json").read_text())
    assert (comp["kind"], comp["columns"]) == (kind, [column])
    assert cli_main(["train", "--data-dir", str(data), "--fold", "0", "--run", str(run), *TINY_TRAIN]) == 0
    state = json.loads((run / "fold0" / "state.json").read_text())
    assert {f"oof_{comp['metric']}", f"prior_{comp['metric']}"} <= set(state)
    assert cli_main(["predict", "--data-dir", str(data), "--run", str(run), "--tta", "2", "--out", str(out)]) == 0
    again = tmp_path / "again.csv"  # a second predict reuses every fold's saved predictions
    assert cli_main(["predict", "--data-dir", str(data), "--run", str(run), "--tta", "2", "--out", str(again)]) == 0
    first, second = pd.read_csv(out, keep_default_na=False), pd.read_csv(again, keep_default_na=False)
    if kind == "regression":  # saved with 8 decimals on the [0, 1] scale: equal to 1e-6 of the range
        np.testing.assert_allclose(second[column], first[column], atol=1e-4)
    else:
        pd.testing.assert_frame_equal(second, first)
    answer = runs.read_calibration(run)["answer"]
    assert answer["chosen"] in task.CANDIDATES[kind] and "held_out" in answer["scores"]["fixed"]
    made = pd.read_csv(out, dtype=str, keep_default_na=False)
    sample = pd.read_csv(next(data.glob("sample_submission*.csv")), dtype=str)
    assert list(made.columns) == list(sample.columns) and list(made.iloc[:, 0]) == list(sample.iloc[:, 0])
    capsys.readouterr()
    assert cli_main(["validate", str(out), "--data-dir", str(data)]) == 0
    assert "OK: 10 rows" in capsys.readouterr().out
    assert cli_main(["report", "--run", str(run)]) == 0
    assert comp["metric"] in capsys.readouterr().out
    broken = made.copy()
    broken.loc[0, column] = {"multilabel": "primary rainforest", "regression": "nan", "ordinal": "7"}[kind]
    broken.to_csv(tmp_path / "broken.csv", index=False)
    assert cli_main(["validate", str(tmp_path / "broken.csv"), "--data-dir", str(data)]) != 0
    said = {"multilabel": "'rainforest'", "regression": "NaN value", "ordinal": "grade out of range"}[kind]
    assert said in capsys.readouterr().err
    if kind == "ordinal":  # APTOS was a code competition: the same answer from the offline notebook
        _the_notebook_answers_as_predict(tmp_path, data, run, out, monkeypatch)


def _the_notebook_answers_as_predict(tmp_path, data, run, local, monkeypatch):
    from kaggle_notebook import OWNER, fake_input, kaggle_kernel, run_notebook

    out = tmp_path / "kaggle" / "aptos"
    assert cli_main(["notebook", "--run", str(run), "--data-dir", str(data), "--out", str(out), "--owner", OWNER,
                     "--wheels", "none"]) == 0
    code_file = json.loads((out / "notebook" / "kernel-metadata.json").read_text())["code_file"]
    kernel = kaggle_kernel(tmp_path, monkeypatch)
    inputs = fake_input(tmp_path / "input", data, out / "dataset", "aptos2019-blindness-detection", new_style=True)
    run_notebook(out / "notebook" / code_file, kernel, tmp_path / "session", monkeypatch, inputs, False)
    made = pd.read_csv(tmp_path / "session" / "working" / "submission.csv", dtype=str)
    pd.testing.assert_frame_equal(made, pd.read_csv(local, dtype=str))


def test_grades_can_be_taken_as_classes_with_task_single(tmp_path):
    _competition_files(tmp_path, "diagnosis", ["0", "1", "2", "3", "4", "0"] * 2, "0")  # a sample of zeros
    assert cli_main(["split_train_val", "--data-dir", str(tmp_path), "--folds", "2", "--groups", "none"]) == 0
    assert json.loads((tmp_path / "competition.json").read_text())["kind"] == "ordinal"
    assert cli_main(["split_train_val", "--data-dir", str(tmp_path), "--folds", "2", "--groups", "none", "--force",
                     "--task", "single"]) == 0
    saved = json.loads((tmp_path / "competition.json").read_text())
    assert (saved["kind"], saved["classes"], saved["metric"]) == ("label", ["0", "1", "2", "3", "4"], "accuracy")
