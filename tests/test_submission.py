"""The submission CSV: Kaggle's exact header, every sample id once, probabilities that sum to 1."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from ncfm import CLASSES, NcfmError, cli
from ncfm import fileio
from ncfm.submission import (
    SubmissionError, build_submission, read_sample, sample_path, validate_file, validate_submission,
    write_submission,
)

HEADER = "image,ALB,BET,DOL,LAG,NoF,OTHER,SHARK,YFT"
STAGE1_IDS = [f"img_{i:05d}.jpg" for i in range(1, 13)]
STAGE2_IDS = STAGE1_IDS + [f"test_stg2/image_{i:05d}.jpg" for i in range(1, 9)]


def probs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(len(CLASSES)), size=n)


def write_sample(data_dir, stage: int, ids) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    build_submission(ids, np.full((len(ids), len(CLASSES)), 1 / 8)).to_csv(sample_path(data_dir, stage), index=False)


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    write_sample(d, 1, STAGE1_IDS)
    write_sample(d, 2, STAGE2_IDS)
    return d


def csv_text(ids, p) -> str:
    return build_submission(ids, p).to_csv(index=False, float_format="%.9f")


def problems_of(tmp_path, text: str, data_dir, stage=1) -> str:
    path = tmp_path / "sub.csv"
    path.write_text(text)
    with pytest.raises(SubmissionError) as e:
        validate_file(path, stage=stage, data_dir=data_dir)
    return str(e.value)


# --------------------------------------------------------------------------- building
def test_built_submission_has_kaggle_header_in_order():
    df = build_submission(STAGE1_IDS, probs(len(STAGE1_IDS)))
    assert ",".join(df.columns) == HEADER
    assert df["image"].tolist() == STAGE1_IDS


def test_build_rejects_probabilities_of_the_wrong_shape():
    with pytest.raises(SubmissionError, match=r"shape \(N, 8\)"):
        build_submission(STAGE1_IDS, np.ones((len(STAGE1_IDS), 7)))
    with pytest.raises(SubmissionError, match="12 ids but 3 rows"):
        build_submission(STAGE1_IDS, probs(3))


def test_a_correct_submission_passes():
    validate_submission(build_submission(STAGE1_IDS, probs(12)), STAGE1_IDS)


def test_row_order_is_free():
    validate_submission(build_submission(STAGE1_IDS[::-1], probs(12)), STAGE1_IDS)


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
        validate_submission(build_submission(STAGE1_IDS, p), STAGE1_IDS)


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
    df = build_submission(STAGE1_IDS, probs(12)).drop(columns=["YFT"])
    with pytest.raises(SubmissionError, match="missing column 'YFT'"):
        validate_submission(df, STAGE1_IDS)


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
        validate_submission(build_submission(ids, p), STAGE1_IDS)
    assert len(e.value.problems) == 4  # missing id, extra id, NaN, row sum
    assert str(e.value).startswith("4 problems:")


# --------------------------------------------------------------------------- stages and files
def test_valid_stage2_file_with_test_stg2_ids_passes_and_stage_is_inferred(tmp_path, data_dir):
    path = tmp_path / "stage2.csv"
    path.write_text(csv_text(STAGE2_IDS, probs(len(STAGE2_IDS))))
    checked = validate_file(path, data_dir=data_dir)
    assert (checked.rows, checked.stage) == (len(STAGE2_IDS), 2)


def test_stage2_ids_without_their_folder_get_a_hint(tmp_path, data_dir):
    ids = [i.replace("test_stg2/", "") for i in STAGE2_IDS]
    msg = problems_of(tmp_path, csv_text(ids, probs(len(ids))), data_dir, stage=2)
    assert "stage-2 ids are written test_stg2/image_NNNNN.jpg" in msg


def test_stage_that_cannot_be_inferred_asks_for_stage(tmp_path, data_dir):
    path = tmp_path / "odd.csv"
    path.write_text(csv_text(STAGE1_IDS[:5], probs(5)))
    with pytest.raises(NcfmError, match="cannot tell the stage from its 5 rows.*pass --stage 1 or --stage 2"):
        validate_file(path, data_dir=data_dir)


def test_missing_sample_says_where_it_looked_and_how_to_get_it(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_text(csv_text(STAGE1_IDS, probs(12)))
    with pytest.raises(NcfmError) as e:
        validate_file(path, stage=1, data_dir=tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "sample_submission_stg1.csv") in msg
    assert "kaggle competitions download -c the-nature-conservancy-fisheries-monitoring" in msg


def test_zipped_sample_is_read_as_kaggle_ships_it(tmp_path):
    write_sample(tmp_path, 1, STAGE1_IDS)
    zipped = tmp_path / "sample_submission_stg1.csv.zip"
    pd.read_csv(sample_path(tmp_path, 1)).to_csv(zipped, index=False,
                                                 compression={"method": "zip", "archive_name": "sample_submission_stg1.csv"})
    sample_path(tmp_path, 1).unlink()
    assert read_sample(sample_path(tmp_path, 1))["image"].tolist() == STAGE1_IDS


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
        validate_file(path, stage=1, data_dir=data_dir)


# --------------------------------------------------------------------------- writing
def test_written_rows_sum_to_one_after_parsing(tmp_path):
    p = probs(500, seed=3) ** 4  # many tiny values
    p /= p.sum(axis=1, keepdims=True)
    ids = [f"img_{i:05d}.jpg" for i in range(500)]
    path = write_submission(build_submission(ids, p), tmp_path / "s.csv", ids)
    back = pd.read_csv(path)
    assert ",".join(back.columns) == HEADER
    assert np.abs(back[list(CLASSES)].sum(axis=1) - 1).max() < 1e-8
    assert np.abs(back[list(CLASSES)].to_numpy() - p).max() < 1e-8


def test_write_creates_parent_folders_and_leaves_no_temp_file(tmp_path):
    out = tmp_path / "submissions" / "run" / "s.csv"
    write_submission(build_submission(STAGE1_IDS, probs(12)), out, STAGE1_IDS)
    assert out.read_text().startswith(HEADER + "\n")
    assert os.listdir(out.parent) == ["s.csv"]


def test_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "s.csv"
    out.write_text("keep me")
    df = build_submission(STAGE1_IDS, probs(12))
    with pytest.raises(NcfmError, match=f"{out} already exists; pass --force"):
        write_submission(df, out, STAGE1_IDS)
    assert out.read_text() == "keep me"
    write_submission(df, out, STAGE1_IDS, force=True)
    assert out.read_text().startswith(HEADER)


def test_an_invalid_submission_is_never_written(tmp_path):
    out = tmp_path / "s.csv"
    with pytest.raises(SubmissionError):
        write_submission(build_submission(STAGE1_IDS[:-1], probs(11)), out, STAGE1_IDS)
    assert not out.exists()


def test_write_is_atomic_a_crash_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "s.csv"
    out.write_text("previous submission")

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_submission(build_submission(STAGE1_IDS, probs(12)), out, STAGE1_IDS, force=True)
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
