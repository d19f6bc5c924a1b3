"""The submission CSV: the sample's exact header, every sample id once, and the answers each kind
of competition asks for: probabilities summing to 1 (NCFM, Dog Breed), one class name (Plant
Seedlings), one probability of the positive class (Aerial Cactus)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ncfm import NcfmError, cli, competition
from ncfm import dataset, fileio
from ncfm.competition import Competition
from ncfm.submission import (
    SubmissionError, build_submission, format_submission, read_sample, read_sample_file, validate_file,
    validate_submission, write_submission,
)

NCFM = competition.ncfm()
CLASSES = NCFM.classes
HEADER = "image,ALB,BET,DOL,LAG,NoF,OTHER,SHARK,YFT"
STAGE1_IDS = [f"img_{i:05d}.jpg" for i in range(1, 13)]
STAGE2_IDS = STAGE1_IDS + [f"test_stg2/image_{i:05d}.jpg" for i in range(1, 9)]


@pytest.fixture(autouse=True)
def competition_for_stand_in(monkeypatch):
    """ncfm.dataset.competition_for is being written on another branch; until it lands, the
    commands here get a stand-in that reads competition.json as it will. Once it exists this
    does nothing and the tests run against the real one."""
    if not hasattr(dataset, "competition_for"):
        monkeypatch.setattr(dataset, "competition_for", raising=False,
                            value=lambda data_dir: competition.load(Path(data_dir) / competition.FILE_NAME))


def probs(n: int, seed: int = 0, k: int = len(CLASSES)) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(k), size=n)


def write_sample(data_dir, stage: int, ids) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    build_submission(ids, np.full((len(ids), len(CLASSES)), 1 / 8), NCFM).to_csv(
        NCFM.sample_path(data_dir, stage), index=False)


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    write_sample(d, 1, STAGE1_IDS)
    write_sample(d, 2, STAGE2_IDS)
    competition.save(NCFM, d / competition.FILE_NAME)
    return d


def csv_text(ids, p, comp: Competition = NCFM) -> str:
    return build_submission(ids, p, comp).to_csv(index=False, float_format="%.9f")


def problems_of(tmp_path, text: str, data_dir, stage=1, comp: Competition = NCFM) -> str:
    path = tmp_path / "sub.csv"
    path.write_text(text)
    with pytest.raises(SubmissionError) as e:
        validate_file(path, comp, stage=stage, data_dir=data_dir)
    return str(e.value)


# --------------------------------------------------------------------------- building
def test_built_submission_has_kaggle_header_in_order():
    df = build_submission(STAGE1_IDS, probs(len(STAGE1_IDS)), NCFM)
    assert ",".join(df.columns) == HEADER
    assert df["image"].tolist() == STAGE1_IDS


def test_build_rejects_probabilities_of_the_wrong_shape():
    with pytest.raises(SubmissionError, match=r"shape \(N, 8\)"):
        build_submission(STAGE1_IDS, np.ones((len(STAGE1_IDS), 7)), NCFM)
    with pytest.raises(SubmissionError, match="12 ids but 3 rows"):
        build_submission(STAGE1_IDS, probs(3), NCFM)


def test_a_correct_submission_passes():
    validate_submission(build_submission(STAGE1_IDS, probs(12), NCFM), STAGE1_IDS, NCFM)


def test_row_order_is_free():
    validate_submission(build_submission(STAGE1_IDS[::-1], probs(12), NCFM), STAGE1_IDS, NCFM)


# --------------------------------------------------------------------------- each problem, named by row
def test_missing_id_is_rejected_with_count_and_id(tmp_path, data_dir):
    msg = problems_of(tmp_path, csv_text(STAGE1_IDS[:-1], probs(11)), data_dir)
    assert "1 id of the sample submission is missing: img_00012.jpg" in msg
    assert "11 rows; the sample submission has 12" in msg


def test_many_missing_ids_show_the_first_few_and_a_count(tmp_path, data_dir):
    msg = problems_of(tmp_path, csv_text(STAGE1_IDS[:4], probs(4)), data_dir)
    assert "8 ids of the sample submission are missing: img_00005.jpg; img_00006.jpg; img_00007.jpg; ... and 5 more" in msg


def test_extra_id_is_rejected_naming_its_line(tmp_path, data_dir):
    ids = STAGE1_IDS + ["img_99999.jpg"]
    msg = problems_of(tmp_path, csv_text(ids, probs(13)), data_dir)
    assert "1 id not in the sample submission: line 14 (img_99999.jpg)" in msg


def test_duplicate_id_names_both_lines(tmp_path, data_dir):
    ids = STAGE1_IDS[:-1] + [STAGE1_IDS[0]]
    msg = problems_of(tmp_path, csv_text(ids, probs(12)), data_dir)
    assert "1 duplicate id: img_00001.jpg on lines 2, 13" in msg


def test_a_byte_order_mark_is_reported_and_the_other_checks_still_run(tmp_path, data_dir):
    ids = STAGE1_IDS[:-1] + ["img_99999.jpg"]
    msg = problems_of(tmp_path, "\ufeff" + csv_text(ids, probs(12)), data_dir)  # Excel's "CSV UTF-8"
    assert "starts with a byte-order mark" in msg and "save it as plain CSV" in msg
    assert "header must be" not in msg  # the header itself is right once the mark is read past
    assert "1 id not in the sample submission: line 13 (img_99999.jpg)" in msg


def test_nan_is_rejected_naming_line_id_and_column(tmp_path, data_dir):
    lines = csv_text(STAGE1_IDS, probs(12)).splitlines()
    cells = lines[3].split(",")
    cells[4] = "nan"  # LAG of img_00003.jpg, CSV line 4
    lines[3] = ",".join(cells)
    msg = problems_of(tmp_path, "\n".join(lines) + "\n", data_dir)
    assert "1 NaN value: line 4 (img_00003.jpg) LAG" in msg


def test_nan_in_a_dataframe_is_rejected():
    p = probs(12)
    p[5, 0] = np.nan
    with pytest.raises(SubmissionError, match=r"NaN value: line 7 \(img_00006.jpg\) ALB"):
        validate_submission(build_submission(STAGE1_IDS, p, NCFM), STAGE1_IDS, NCFM)


@pytest.mark.parametrize("header, expected", [
    ("image,ALB,BET,DOL,LAG,nof,OTHER,SHARK,YFT", "'nof' should be 'NoF'"),
    ("image,BET,ALB,DOL,LAG,NoF,OTHER,SHARK,YFT", "columns in the wrong order"),
    ("image,ALB,BET,DOL,LAG,NoF,OTHER,SHARK,YFT,extra", "unexpected column 'extra'"),
    ("id,ALB,BET,DOL,LAG,NoF,OTHER,SHARK,YFT", "no `image` column"),
])
def test_wrong_header_is_rejected_saying_what_is_wrong(tmp_path, data_dir, header, expected):
    body = csv_text(STAGE1_IDS, probs(12)).splitlines()[1:]
    if header.endswith(",extra"):
        body = [line + ",0" for line in body]
    msg = problems_of(tmp_path, "\n".join([header] + body) + "\n", data_dir)
    assert f"header must be exactly {HEADER}" in msg
    assert expected in msg


def test_missing_column_is_named(tmp_path, data_dir):
    df = build_submission(STAGE1_IDS, probs(12), NCFM).drop(columns=["YFT"])
    with pytest.raises(SubmissionError, match="missing column 'YFT'"):
        validate_submission(df, STAGE1_IDS, NCFM)


def test_row_not_summing_to_one_is_rejected_naming_its_line(tmp_path, data_dir):
    p = probs(12)
    p[1] *= 0.9
    msg = problems_of(tmp_path, csv_text(STAGE1_IDS, p), data_dir)
    assert "1 row not summing to 1" in msg
    assert "line 3 (img_00002.jpg) sums to 0.9" in msg


@pytest.mark.parametrize("value, expected", [
    ("-0.1", "negative value: line 2 (img_00001.jpg) ALB=-0.1"),
    ("1.5", "value greater than 1: line 2 (img_00001.jpg) ALB=1.5"),
    ("inf", "infinite value: line 2 (img_00001.jpg) ALB=inf"),
    ("abc", "value that is not a number: line 2 (img_00001.jpg) ALB='abc'"),
    ("", "empty value: line 2 (img_00001.jpg) ALB"),
])
def test_bad_values_are_rejected_naming_the_cell(tmp_path, data_dir, value, expected):
    lines = csv_text(STAGE1_IDS, probs(12)).splitlines()
    cells = lines[1].split(",")
    cells[1] = value
    lines[1] = ",".join(cells)
    assert expected in problems_of(tmp_path, "\n".join(lines) + "\n", data_dir)


def test_several_kinds_of_problem_are_reported_together(tmp_path, data_dir):
    p = probs(12)
    p[2, 3] = np.nan
    p[4] *= 2
    ids = STAGE1_IDS[:-1] + ["img_77777.jpg"]
    with pytest.raises(SubmissionError) as e:
        validate_submission(build_submission(ids, p, NCFM), STAGE1_IDS, NCFM)
    assert len(e.value.problems) == 4  # missing id, extra id, NaN, row sum
    assert str(e.value).startswith("4 problems:")


# --------------------------------------------------------------------------- stages and files
def test_valid_stage2_file_with_test_stg2_ids_passes_and_stage_is_inferred(tmp_path, data_dir):
    path = tmp_path / "stage2.csv"
    path.write_text(csv_text(STAGE2_IDS, probs(len(STAGE2_IDS))))
    checked = validate_file(path, NCFM, data_dir=data_dir)
    assert (checked.rows, checked.stage) == (len(STAGE2_IDS), 2)


def test_stage2_ids_without_their_folder_get_a_hint(tmp_path, data_dir):
    ids = [i.replace("test_stg2/", "") for i in STAGE2_IDS]
    msg = problems_of(tmp_path, csv_text(ids, probs(len(ids))), data_dir, stage=2)
    assert "the sample's ids are written with their folder, as in test_stg2/image_00001.jpg" in msg


def test_stage_that_cannot_be_inferred_asks_for_stage(tmp_path, data_dir):
    path = tmp_path / "odd.csv"
    path.write_text(csv_text(STAGE1_IDS[:5], probs(5)))
    with pytest.raises(NcfmError, match="cannot tell the stage from its 5 rows.*pass --stage 1 or --stage 2"):
        validate_file(path, NCFM, data_dir=data_dir)


def test_missing_sample_says_where_it_looked_and_how_to_get_it(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_text(csv_text(STAGE1_IDS, probs(12)))
    with pytest.raises(NcfmError) as e:
        validate_file(path, NCFM, stage=1, data_dir=tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "sample_submission_stg1.csv") in msg
    assert "kaggle competitions download -c the-nature-conservancy-fisheries-monitoring" in msg


def test_zipped_sample_is_read_as_kaggle_ships_it(tmp_path):
    write_sample(tmp_path, 1, STAGE1_IDS)
    zipped = tmp_path / "sample_submission_stg1.csv.zip"
    sample = NCFM.sample_path(tmp_path, 1)
    pd.read_csv(sample).to_csv(zipped, index=False,
                               compression={"method": "zip", "archive_name": "sample_submission_stg1.csv"})
    sample.unlink()
    assert read_sample(sample, NCFM)["image"].tolist() == STAGE1_IDS


@pytest.mark.parametrize("content, expected", [
    (None, "no such file"),
    (b"", r"empty file \(0 bytes\)"),
    (b"\n\n  \n", "no header line"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00\x01", "not a readable CSV"),
    (f"{HEADER}\nimg_00001.jpg,1,0,0,0,0,0,0,0,0,0\n".encode(), "line 2 has 11 fields"),
])
def test_unreadable_files_get_clear_errors(tmp_path, data_dir, content, expected):
    path = tmp_path / "sub.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NcfmError, match=expected):
        validate_file(path, NCFM, stage=1, data_dir=data_dir)


# --------------------------------------------------------------------------- writing
def test_written_rows_sum_to_one_after_parsing(tmp_path):
    p = probs(500, seed=3) ** 4  # many tiny values
    p /= p.sum(axis=1, keepdims=True)
    ids = [f"img_{i:05d}.jpg" for i in range(500)]
    path = write_submission(build_submission(ids, p, NCFM), tmp_path / "s.csv", ids, NCFM)
    back = pd.read_csv(path)
    assert ",".join(back.columns) == HEADER
    assert np.abs(back[list(CLASSES)].sum(axis=1) - 1).max() < 1e-8
    assert np.abs(back[list(CLASSES)].to_numpy() - p).max() < 1e-8


def test_write_creates_parent_folders_and_leaves_no_temp_file(tmp_path):
    out = tmp_path / "submissions" / "run" / "s.csv"
    write_submission(build_submission(STAGE1_IDS, probs(12), NCFM), out, STAGE1_IDS, NCFM)
    assert out.read_text().startswith(HEADER + "\n")
    assert os.listdir(out.parent) == ["s.csv"]


def test_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "s.csv"
    out.write_text("keep me")
    df = build_submission(STAGE1_IDS, probs(12), NCFM)
    with pytest.raises(NcfmError, match=f"{out} already exists; pass --force"):
        write_submission(df, out, STAGE1_IDS, NCFM)
    assert out.read_text() == "keep me"
    write_submission(df, out, STAGE1_IDS, NCFM, force=True)
    assert out.read_text().startswith(HEADER)


def test_an_invalid_submission_is_never_written(tmp_path):
    out = tmp_path / "s.csv"
    with pytest.raises(SubmissionError):
        write_submission(build_submission(STAGE1_IDS[:-1], probs(11), NCFM), out, STAGE1_IDS, NCFM)
    assert not out.exists()


def test_write_is_atomic_a_crash_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "s.csv"
    out.write_text("previous submission")

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_submission(build_submission(STAGE1_IDS, probs(12), NCFM), out, STAGE1_IDS, NCFM, force=True)
    assert out.read_text() == "previous submission"


# --------------------------------------------------------------------------- the command
def test_validate_command_prints_ok_and_exits_0(tmp_path, data_dir, capsys):
    path = tmp_path / "sub.csv"
    path.write_text(csv_text(STAGE1_IDS, probs(12)))
    assert cli.main(["validate", str(path), "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.startswith("OK: 12 rows, stage 1")


def test_validate_command_prints_problems_and_exits_2(tmp_path, data_dir, capsys):
    path = tmp_path / "sub.csv"
    path.write_text(csv_text(STAGE1_IDS[:-1], probs(11)))
    assert cli.main(["validate", str(path), "--stage", "1", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "INVALID" in err and "img_00012.jpg" in err


# --------------------------------------------------------------------------- other competitions
# Dog Breed: probabilities, the sample's columns not in the model's (alphabetical) class order.
DOGS = Competition(classes=("affenpinscher", "beagle", "chihuahua"), kind="probabilities", metric="log_loss",
                   id_column="id", columns=("chihuahua", "affenpinscher", "beagle"),
                   samples={"1": "sample_submission.csv"}, slug="dog-breed-identification")
DOG_IDS = ["000621fb3cbb32d8935728e48679680e", "00102ee9d8eb90812350685311fe5890", "0012a730dfa437f5f3613fb75efcd4ce"]
# Plant Seedlings: one label per row; class names with spaces and hyphens.
PLANTS = Competition(classes=("Black-grass", "Common Chickweed", "Loose Silky-bent", "Sugar beet"), kind="label",
                     metric="accuracy", id_column="file", columns=("species",),
                     samples={"1": "sample_submission.csv"}, slug="plant-seedlings-classification")
PLANT_IDS = ["0021e90e4.png", "003d61042.png", "007b3da8b.png", "0086a6340.png"]
# Aerial Cactus: P(has cactus) per row.
CACTI = Competition(classes=("0", "1"), kind="binary", metric="roc_auc", id_column="id", columns=("has_cactus",),
                    positive="1", samples={"1": "sample_submission.csv"}, slug="aerial-cactus-identification")
CACTUS_IDS = ["000940378805c44108d287872b2f04ce.jpg", "0017242f54ececa4512b4d7937d1e21e.jpg",
              "001ee6d8564003107853118ab87df407.jpg"]
OTHERS = {"dogs": (DOGS, DOG_IDS), "plants": (PLANTS, PLANT_IDS), "cacti": (CACTI, CACTUS_IDS)}


def other_data(tmp_path, comp: Competition, ids, answer: str) -> Path:
    """A data folder holding `comp`'s one sample submission (every row answering `answer`) and
    its competition.json."""
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    lines = [",".join(comp.header)] + [",".join([i] + [answer] * len(comp.columns)) for i in ids]
    comp.sample_path(d).write_text("\n".join(lines) + "\n")
    competition.save(comp, d / competition.FILE_NAME)
    return d


def sample_answer(comp: Competition) -> str:
    return {"probabilities": f"{1 / comp.num_classes:.6f}", "label": comp.classes[0], "binary": "0.5"}[comp.kind]


def other_problems(tmp_path, comp: Competition, ids, text: str) -> str:
    data = other_data(tmp_path, comp, ids, sample_answer(comp))
    return problems_of(tmp_path, text, data, stage=None, comp=comp)


def test_probability_columns_follow_the_samples_order_mapped_by_class_name():
    p = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [0.3, 0.3, 0.4]])  # affenpinscher, beagle, chihuahua
    df = build_submission(DOG_IDS, p, DOGS)
    assert list(df.columns) == ["id", "chihuahua", "affenpinscher", "beagle"]
    assert df["chihuahua"].tolist() == [0.7, 0.2, 0.4]
    assert df["beagle"].tolist() == [0.2, 0.3, 0.3]


def test_a_probability_file_in_the_samples_column_order_passes(tmp_path):
    data = other_data(tmp_path, DOGS, DOG_IDS, sample_answer(DOGS))
    path = write_submission(build_submission(DOG_IDS, probs(3, k=3), DOGS), tmp_path / "dogs.csv", DOG_IDS, DOGS)
    assert path.read_text().startswith("id,chihuahua,affenpinscher,beagle\n")
    assert validate_file(path, DOGS, data_dir=data).rows == 3


def test_probability_columns_in_class_order_instead_of_the_samples_are_rejected(tmp_path):
    df = pd.DataFrame(probs(3, k=3), columns=list(DOGS.classes))
    df.insert(0, "id", DOG_IDS)
    with pytest.raises(SubmissionError, match="columns in the wrong order"):
        validate_submission(df, DOG_IDS, DOGS)


def test_build_writes_the_most_likely_class_name_exactly_as_spelled():
    p = np.eye(4)[[1, 3, 0, 2]] * 0.6 + 0.1  # Common Chickweed, Sugar beet, Black-grass, Loose Silky-bent
    df = build_submission(PLANT_IDS, p, PLANTS)
    assert list(df.columns) == ["file", "species"]
    assert df["species"].tolist() == ["Common Chickweed", "Sugar beet", "Black-grass", "Loose Silky-bent"]


def test_a_label_file_with_class_names_holding_spaces_passes_the_round_trip(tmp_path):
    data = other_data(tmp_path, PLANTS, PLANT_IDS, sample_answer(PLANTS))
    df = build_submission(PLANT_IDS, np.eye(4)[[1, 3, 0, 2]], PLANTS)
    path = write_submission(df, tmp_path / "plants.csv", PLANT_IDS, PLANTS)
    assert path.read_text().splitlines()[1:3] == ["0021e90e4.png,Common Chickweed", "003d61042.png,Sugar beet"]
    assert validate_file(path, PLANTS, data_dir=data).stage == 1


def test_an_unknown_label_is_rejected_naming_line_id_and_value(tmp_path):
    text = ("file,species\n0021e90e4.png,Black-grass\n003d61042.png,Tulip\n007b3da8b.png,Sugar beet\n"
            "0086a6340.png,Sugar beet\n")
    msg = other_problems(tmp_path, PLANTS, PLANT_IDS, text)
    assert "1 label not one of the 4 classes" in msg
    assert "line 3 (003d61042.png) species='Tulip'" in msg


def test_a_misspelt_label_gets_the_class_it_means(tmp_path):
    text = ("file,species\n0021e90e4.png,black grass\n003d61042.png,common_chickweed\n"
            "007b3da8b.png,Sugar beet\n0086a6340.png,Loose silky bent\n")
    msg = other_problems(tmp_path, PLANTS, PLANT_IDS, text)
    assert "3 labels not one of the 4 classes" in msg
    assert "line 2 (0021e90e4.png) species='black grass' ('black grass' should be 'Black-grass')" in msg
    assert "'common_chickweed' should be 'Common Chickweed'" in msg
    assert "'Loose silky bent' should be 'Loose Silky-bent'" in msg


def test_an_empty_label_is_rejected():
    df = build_submission(PLANT_IDS, np.eye(4), PLANTS)
    df.loc[2, "species"] = ""
    with pytest.raises(SubmissionError, match=r"1 empty value: line 4 \(007b3da8b.png\) species"):
        validate_submission(df, PLANT_IDS, PLANTS)


def test_build_writes_the_positive_class_probability():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    df = build_submission(CACTUS_IDS, p, CACTI)
    assert list(df.columns) == ["id", "has_cactus"]
    assert df["has_cactus"].tolist() == [0.1, 0.8, 0.5]


def test_the_positive_class_is_found_by_name_not_position():
    cats = Competition(classes=("cat", "dog"), kind="binary", metric="log_loss", id_column="id",
                       columns=("label",), positive="cat")
    assert build_submission(["1", "2"], np.array([[0.7, 0.3], [0.4, 0.6]]), cats)["label"].tolist() == [0.7, 0.4]


def test_a_binary_file_passes_without_rows_summing_to_one(tmp_path):
    data = other_data(tmp_path, CACTI, CACTUS_IDS, sample_answer(CACTI))
    df = build_submission(CACTUS_IDS, np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]), CACTI)
    path = write_submission(df, tmp_path / "cacti.csv", CACTUS_IDS, CACTI)
    assert path.read_text().splitlines()[1] == f"{CACTUS_IDS[0]},0.100000000"
    assert validate_file(path, CACTI, data_dir=data).rows == 3


@pytest.mark.parametrize("value, expected", [
    ("1.2", "1 value greater than 1: line 3 (0017242f54ececa4512b4d7937d1e21e.jpg) has_cactus=1.2"),
    ("-0.5", "1 negative value: line 3 (0017242f54ececa4512b4d7937d1e21e.jpg) has_cactus=-0.5"),
    ("nan", "1 NaN value: line 3 (0017242f54ececa4512b4d7937d1e21e.jpg) has_cactus"),
    ("yes", "1 value that is not a number: line 3 (0017242f54ececa4512b4d7937d1e21e.jpg) has_cactus='yes'"),
])
def test_a_binary_value_that_is_not_a_probability_is_rejected_naming_the_cell(tmp_path, value, expected):
    text = f"id,has_cactus\n{CACTUS_IDS[0]},0.3\n{CACTUS_IDS[1]},{value}\n{CACTUS_IDS[2]},1\n"
    assert expected in other_problems(tmp_path, CACTI, CACTUS_IDS, text)


def test_a_binary_file_with_a_column_per_class_is_rejected(tmp_path):
    text = "id,has_cactus,no_cactus\n" + "".join(f"{i},0.3,0.7\n" for i in CACTUS_IDS)
    msg = other_problems(tmp_path, CACTI, CACTUS_IDS, text)
    assert "header must be exactly id,has_cactus; got id,has_cactus,no_cactus (unexpected column 'no_cactus')" in msg


@pytest.mark.parametrize("name, header, expected", [
    ("dogs", "id,affenpinscher,beagle,chihuahua", "columns in the wrong order"),
    ("plants", "file,label", "unexpected column 'label'; missing column 'species'"),
    ("plants", "File,species", "'File' should be 'file'"),
    ("cacti", "image,has_cactus", "unexpected column 'image'; missing column 'id'"),
])
def test_a_wrong_header_is_rejected_for_each_kind(tmp_path, name, header, expected):
    comp, ids = OTHERS[name]
    answer = sample_answer(comp)
    text = "\n".join([header] + [",".join([i] + [answer] * (header.count(","))) for i in ids]) + "\n"
    msg = other_problems(tmp_path, comp, ids, text)
    assert f"header must be exactly {','.join(comp.header)}" in msg and expected in msg


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_a_missing_id_is_rejected_for_each_kind(tmp_path, name):
    comp, ids = OTHERS[name]
    text = csv_text(ids[:-1], probs(len(ids) - 1, k=comp.num_classes), comp)
    msg = other_problems(tmp_path, comp, ids, text)
    assert f"1 id of the sample submission is missing: {ids[-1]}" in msg


def test_bare_number_ids_are_read_as_strings_keeping_leading_zeros(tmp_path):
    invasive = Competition(classes=("0", "1"), kind="binary", metric="roc_auc", id_column="name",
                           columns=("invasive",), positive="1", samples={"1": "sample_submission.csv"})
    data = tmp_path / "data"
    data.mkdir()
    (data / "sample_submission.csv").write_text("name,invasive\n1,0.5\n0012,0.5\n10,0.5\n")
    assert read_sample_file(data / "sample_submission.csv")["name"].tolist() == ["1", "0012", "10"]
    path = tmp_path / "sub.csv"
    path.write_text("name,invasive\n1,0.2\n0012,0.9\n10,0.4\n")
    assert validate_file(path, invasive, data_dir=data).rows == 3
    path.write_text("name,invasive\n1,0.2\n12,0.9\n10,0.4\n")
    with pytest.raises(SubmissionError, match="1 id of the sample submission is missing: 0012"):
        validate_file(path, invasive, data_dir=data)


def test_a_sample_whose_first_column_is_not_the_competitions_ids_is_an_error(tmp_path):
    path = tmp_path / "sample_submission.csv"
    path.write_text("image,has_cactus\na.jpg,0.5\n")
    with pytest.raises(NcfmError, match="its first column is 'image', but the competition's ids are 'id'"):
        read_sample_file(path, id_column="id")


def test_a_competition_with_one_stage_needs_no_stage_whatever_the_row_count(tmp_path):
    data = other_data(tmp_path, CACTI, CACTUS_IDS, "0.5")
    path = tmp_path / "sub.csv"
    path.write_text(csv_text(CACTUS_IDS[:2], probs(2, k=2), CACTI))
    with pytest.raises(SubmissionError, match="1 id of the sample submission is missing"):
        validate_file(path, CACTI, data_dir=data)


def test_format_writes_labels_as_text_and_binary_values_with_nine_decimals():
    labels = build_submission(PLANT_IDS[:1], np.eye(4)[[3]], PLANTS)
    assert format_submission(labels, PLANTS) == "file,species\n0021e90e4.png,Sugar beet\n"
    cactus = build_submission(CACTUS_IDS[:1], np.array([[0.25, 0.75]]), CACTI)
    assert format_submission(cactus, CACTI) == f"id,has_cactus\n{CACTUS_IDS[0]},0.750000000\n"


def test_validate_command_reads_the_competition_from_the_data_folder(tmp_path, capsys):
    data = other_data(tmp_path, PLANTS, PLANT_IDS, "Black-grass")
    path = tmp_path / "sub.csv"
    path.write_text(csv_text(PLANT_IDS, np.eye(4), PLANTS).replace("Sugar beet", "sugar-beet"))
    assert cli.main(["validate", str(path), "--data-dir", str(data)]) == 2
    assert "'sugar-beet' should be 'Sugar beet'" in capsys.readouterr().err


def test_validate_command_with_only_a_sample_takes_the_header_from_it(tmp_path, capsys):
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("id,has_cactus\n" + "".join(f"{i},0.5\n" for i in CACTUS_IDS))
    path = tmp_path / "sub.csv"
    path.write_text(csv_text(CACTUS_IDS, probs(3, k=2), CACTI))
    args = ["validate", str(path), "--sample", str(sample), "--data-dir", str(tmp_path / "nowhere")]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.startswith("OK: 3 rows, stage ?")
    path.write_text("id,has_cactus\n" + "".join(f"{i},2\n" for i in CACTUS_IDS))
    assert cli.main(args) == 2
    assert "3 values greater than 1" in capsys.readouterr().err


def test_validate_command_with_only_a_label_sample_asks_for_competition_json(tmp_path, capsys):
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("file,species\n" + "".join(f"{i},Sugar beet\n" for i in PLANT_IDS))
    path = tmp_path / "sub.csv"
    path.write_text(sample.read_text())
    assert cli.main(["validate", str(path), "--sample", str(sample), "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "does not say which classes exist; run `ncfm split_train_val" in capsys.readouterr().err
