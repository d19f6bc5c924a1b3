"""The report of a detector run (`ncfm detect`): per-fold box numbers and their mean, loss curves,
fish/no-fish scores, and the worst boxes first with their crops; unfinished folds, missing images
and missing true boxes are notes, never a traceback.

The run is written by hand in tmp_path the way `ncfm detect` lays it out (ncfm.runs' writers),
with tiny PIL images whose boxes give IoUs known by hand:
    fold0: a.jpg found exactly (IoU 1); b.jpg's best box shifted by half (IoU 1/3), its second
           exact; c.jpg nothing found (IoU 0); empty images n1 (score 0.5), n2 (0.1). Fish best
           scores 0.9, 0.6, 0. recall@0.5 = 2/3, top-1 = 1/3, best-box IoU = 4/9, AUC = 4/6.
    fold1: d.jpg found exactly (score 0.8), empty n3 (0.2): every number 1.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from conftest import write_image
from ncfm import cli, report, report_detect, runs
from ncfm.boxes import write_boxes

NAN = float("nan")
SIZE = (64, 48)  # width, height of every image
TRUE = {"train/ALB/a.jpg": (10, 10, 20, 20), "train/ALB/b.jpg": (0, 0, 20, 20),
        "train/ALB/c.jpg": (5, 5, 10, 10), "train/BET/d.jpg": (30, 20, 20, 20)}
FOUND = {0: [("train/ALB/a.jpg", 0, 0.9, 10, 10, 20, 20), ("train/ALB/a.jpg", 1, 0.3, 40, 30, 10, 10),
             ("train/ALB/b.jpg", 0, 0.6, 10, 0, 20, 20), ("train/ALB/b.jpg", 1, 0.4, 0, 0, 20, 20),
             ("train/ALB/c.jpg", 0, 0.0, NAN, NAN, NAN, NAN),
             ("train/NoF/n1.jpg", 0, 0.5, 1, 1, 5, 5), ("train/NoF/n2.jpg", 0, 0.1, 1, 1, 5, 5)],
         1: [("train/BET/d.jpg", 0, 0.8, 30, 20, 20, 20), ("train/NoF/n3.jpg", 0, 0.2, 2, 2, 8, 8)]}
MANIFEST = [("train/ALB/a.jpg", "ALB", 0), ("train/ALB/b.jpg", "ALB", 0), ("train/ALB/c.jpg", "ALB", 0),
            ("train/NoF/n1.jpg", "NoF", 0), ("train/NoF/n2.jpg", "NoF", 0),
            ("train/BET/d.jpg", "BET", 1), ("train/NoF/n3.jpg", "NoF", 1)]


def write_detector_fold(run: Path, k: int, finished: bool = True, epochs: int = 3, **recorded) -> runs.Fold:
    """fold<k>/ as ncfm detect writes it; paths in config.json relative to the project root, as
    `ncfm detect` run there records them. `recorded` overrides state.json's oof_* numbers."""
    fold = runs.fold_of(run, k)
    fold.dir.mkdir(parents=True)
    runs.write_config(fold, {"kind": runs.DETECTOR, "fold": k, "n_folds": 2, "data_dir": "data",
                             "folds_csv": "data/folds.csv", "empty_classes": ["NoF"], "image_size": 64,
                             "epochs": epochs, "backbone": "resnet_small", "weights": "none"})
    done = epochs if finished else 1
    history = [{"epoch": e, "loss": 100.0 / e ** 2, "val_loss": 50.0 / e + k, "learning_rate": 1e-3,
                "seconds": 1.0} for e in range(1, done + 1)]
    runs.write_history(fold, history, runs.DETECT_HISTORY_COLUMNS)
    best = max(done - k, 1)
    state = {"epoch": done, "phase": 1, "best_epoch": best, "best_val_loss": 50.0 / best + k, "wait": 0,
             "finished": finished}
    if finished:
        quality = ({"recall@0.5": 2 / 3, "top1@0.5": 1 / 3, "best_iou": 4 / 9, "fish_auc": 4 / 6, "boxed_images": 3,
                    "true_boxes": 3} if k == 0 else
                   {"recall@0.5": 1.0, "top1@0.5": 1.0, "best_iou": 1.0, "fish_auc": 1.0, "boxed_images": 1,
                    "true_boxes": 1})
        quality |= recorded
        state |= {"train_seconds": 90.0 + k * 30, **{f"oof_{key}": v for key, v in quality.items()}}
        runs.write_found_boxes(fold.oof_boxes, pd.DataFrame(FOUND[k], columns=runs.FOUND_BOX_COLUMNS))
    runs.write_state(fold, state)
    return fold


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """root/data (images, folds.csv, boxes.csv) and root/runs/det with two finished detector folds;
    the tests run from another folder, so the config's relative paths must be found from the run."""
    root = tmp_path / "project"
    data = root / "data"
    for image, _, _ in MANIFEST:
        write_image(data / image, size=SIZE, colour=(40, 90, 160))
    pd.DataFrame(MANIFEST, columns=["image", "label", "fold"]).assign(group=range(len(MANIFEST))).to_csv(
        data / "folds.csv", index=False)
    write_boxes(pd.DataFrame([(image, image.split("/")[1], *box, *SIZE) for image, box in TRUE.items()],
                             columns=["image", "label", "x", "y", "width", "height", "image_width", "image_height"]),
                data / "boxes.csv")
    for k in (0, 1):
        write_detector_fold(root / "runs" / "det", k)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return root


def cell(page: str, cell_id: str) -> str:
    m = re.search(rf'id="{re.escape(cell_id)}">([^<]*)<', page)
    assert m, f"no cell {cell_id}"
    return m.group(1)


def build(root: Path) -> tuple[dict, str]:
    result = report.build_report([root / "runs" / "det"])
    return result, result["html"].read_text()


# --------------------------------------------------------------------------- numbers
def test_best_box_iou_is_the_rank0_box_against_its_nearest_true_box():
    found = pd.DataFrame(FOUND[0], columns=runs.FOUND_BOX_COLUMNS)
    truth = pd.DataFrame([(i, *b) for i, b in TRUE.items()], columns=["image", "x", "y", "width", "height"])
    per_image = report_detect.best_box_ious(found, truth).set_index("image")
    # n1, n2 (empty) have no true box; d.jpg is not among these found boxes
    assert sorted(per_image.index) == ["train/ALB/a.jpg", "train/ALB/b.jpg", "train/ALB/c.jpg"]
    assert per_image.best_iou.to_dict() == pytest.approx({"train/ALB/a.jpg": 1.0, "train/ALB/b.jpg": 1 / 3,
                                                          "train/ALB/c.jpg": 0.0})
    assert per_image.loc["train/ALB/c.jpg", "found"] == 0 and per_image.loc["train/ALB/a.jpg", "found"] == 2
    # b.jpg's second box is exact: the best box's IoU is the rank-0 box's, not the best of any box


def test_grid_order_is_worst_iou_first_then_the_more_confident_miss():
    per_image = pd.DataFrame({"image": ["good", "timid_miss", "half", "confident_miss"], "fold": 0,
                              "best_score": [0.9, 0.1, 0.5, 0.8], "best_iou": [0.9, 0.0, 0.5, 0.0]})
    assert list(report_detect.worst_boxes_first(per_image).image) == ["confident_miss", "timid_miss", "half", "good"]


def test_grid_picks_at_most_the_limit_and_passes_over_missing_files(tmp_path):
    for name in ("a.jpg", "c.jpg", "d.jpg"):
        write_image(tmp_path / name)
    per_image = pd.DataFrame({"image": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "fold": 0,
                              "best_score": [0.5] * 4, "best_iou": [0.4, 0.1, 0.2, 0.3]})
    shown, missing = report_detect.pick_grid_images(per_image, tmp_path, limit=2)
    assert shown == ["c.jpg", "d.jpg"] and missing == ["b.jpg"]


def test_table_shows_each_folds_box_numbers_and_their_mean(project):
    _, page = build(project)
    expected = {"fold0": ("66.7%", "33.3%", "0.444", "0.667", "3", "3", "1m30s"),
                "fold1": ("100.0%", "100.0%", "1.000", "1.000", "1", "2", "2m00s"),
                "mean": ("83.3%", "66.7%", "0.722", "0.833", "2", None, "1m45s")}
    for row, (recall, top1, best_iou, auc, boxed, best_epoch, time) in expected.items():
        keys = ("recall", "top1", "best-iou", "fish-auc", "boxed", "train-time")
        got = [cell(page, f"run0-{row}-{key}") for key in keys]
        assert got == [recall, top1, best_iou, auc, boxed, time], row
        if best_epoch:
            assert cell(page, f"run0-{row}-best-epoch") == best_epoch
    assert cell(page, "run0-fold1-best-val-loss") == "26.0000"  # 50/2 + 1, from state.json
    # pooled: 3 of 4 true boxes hit, best IoUs (1, 1/3, 0, 1)
    assert cell(page, "run0-oof-recall") == "75.0%" and cell(page, "run0-oof-best-iou") == "0.583"


def test_writes_curves_scores_and_grid_pngs_into_the_run_folder(project):
    result, page = build(project)
    run = project / "runs" / "det"
    names = ["report_detect_curves.png", "report_detect_scores.png", "report_detect_grid.png"]
    assert result["html"] == run / "report.html"
    assert [p.name for p in result["pngs"]] == names
    for name in names:
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'title="{name}"' in page  # embedded in the page too


def test_grid_shows_the_worst_boxes_first(project):
    result, _ = build(project)
    assert result["detectors"][0]["grid"] == ["train/ALB/c.jpg", "train/ALB/b.jpg",  # IoU 0, 1/3
                                              "train/ALB/a.jpg", "train/BET/d.jpg"]  # IoU 1, score 0.9 then 0.8


def test_fish_and_empty_scores_are_each_images_best_score(project):
    run = report_detect.load_detector_run(project / "runs" / "det")
    fish, empty = report_detect.image_scores(run)
    assert sorted(fish) == [0.0, 0.6, 0.8, 0.9] and sorted(empty) == [0.1, 0.2, 0.5]


# --------------------------------------------------------------------------- what is missing
def test_a_missing_image_is_skipped_with_a_note(project):
    (project / "data" / "train" / "ALB" / "b.jpg").unlink()
    result, page = build(project)
    assert result["detectors"][0]["grid"] == ["train/ALB/c.jpg", "train/ALB/a.jpg", "train/BET/d.jpg"]
    assert "train/ALB/b.jpg (missing)" in page[page.index('id="run0-grid-skipped"'):]
    assert cell(page, "run0-fold0-best-iou") == "0.444"  # the numbers do not need the images


def test_an_unfinished_fold_is_listed_as_training_not_fatal(project, capsys):
    run = project / "runs" / "det"
    write_detector_fold(run, 2, finished=False)
    cli._draw_report([run])  # what train/predict call: it must draw, not skip
    assert "report skipped" not in capsys.readouterr().err
    page = (run / "report.html").read_text()
    row = page[page.index('id="run0-fold2-best-epoch"'):]
    row = row[:row.index("</tr>")]
    assert "training (epoch 1/3)" in row and "—" in cell(page, "run0-fold2-recall")
    assert "fold2: no oof_boxes.csv yet (training (epoch 1/3))" in page
    assert cell(page, "run0-mean-recall") == "83.3%"  # the mean is of the finished folds


def test_a_run_without_any_finished_fold_still_shows_its_curves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_detector_fold(tmp_path / "runs" / "det", 0, finished=False)
    result = report.build_report([tmp_path / "runs" / "det"])
    assert [p.name for p in result["pngs"]] == ["report_detect_curves.png"]
    assert "No fold has found boxes" in result["html"].read_text()


def test_box_numbers_come_from_the_files_and_a_differing_state_is_noted(project):
    run = project / "runs" / "det"
    state = runs.read_state(runs.fold_of(run, 0))
    runs.write_state(runs.fold_of(run, 0), state | {"oof_recall@0.5": 0.9})
    _, page = build(project)
    assert cell(page, "run0-fold0-recall") == "66.7%"
    assert "state.json records recall@0.5 0.9000" in page


def test_without_boxes_csv_the_numbers_are_those_state_json_recorded(project):
    run = project / "runs" / "det"
    state = runs.read_state(runs.fold_of(run, 0))
    runs.write_state(runs.fold_of(run, 0), state | {"oof_recall@0.5": 0.9})
    (project / "data" / "boxes.csv").unlink()
    result, page = build(project)
    assert cell(page, "run0-fold0-recall") == "90.0%"
    assert "boxes file not found" in page and "no picture grid" in page
    assert [p.name for p in result["pngs"]] == ["report_detect_curves.png"]


def test_a_damaged_oof_boxes_file_is_a_note(project):
    (project / "runs" / "det" / "fold1" / "oof_boxes.csv").write_text("image,score\nx,1\n")
    _, page = build(project)
    assert "missing column(s) rank" in page
    assert cell(page, "run0-mean-recall") == "83.3%"  # fold1's numbers from its state.json


# --------------------------------------------------------------------------- the command
def test_cli_report_prints_the_detector_table(project, capsys):
    assert cli.main(["report", "--run", str(project / "runs" / "det")]) == 0
    out = capsys.readouterr().out
    fold0 = next(line for line in out.splitlines() if line.strip().startswith("fold0"))
    assert fold0.split()[1:5] == ["66.7%", "33.3%", "0.444", "0.667"]
    assert "report:" in out


def test_a_detector_and_a_classifier_run_share_one_page(project, tmp_path):
    from test_report import write_fold

    classifier = project / "runs" / "cls"
    write_fold(classifier, 0, 1, np.random.default_rng(0))
    result = report.build_report([project / "runs" / "det", classifier])
    page = result["html"].read_text()
    assert [s["name"] for s in result["runs"]] == ["cls"] and [s["name"] for s in result["detectors"]] == ["det"]
    assert 'id="run0-detect"' in page and 'id="run1-cv"' in page
    assert {"report_det_detect_grid.png", "report_cls_confusion.png"} <= {p.name for p in result["pngs"]}
