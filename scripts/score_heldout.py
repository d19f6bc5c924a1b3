"""Score a finished `ncfm demo --crops` folder on what Kaggle keeps to itself: the synthetic test
labels (data/test_truth.csv) and the test fish's boxes (data/test_boxes.csv).

    python scripts/score_heldout.py demo

Prints, per submission CSV in DEMO/submissions/, the log loss on the stage-1 and the stage-2
test images (a stage-2 CSV lists both), and per detector fold its recall@0.5, top-1 hit and
best-box IoU on the test fish with its fish/no-fish AUC.

A `ncfm demo --layout planet|pawpularity|aptos` folder (several labels, a number, a grade) gets, per
answer rule predict weighed (the fixed one, one threshold, a threshold per label, grade cut points),
its score on the hidden test labels beside its OOF scores, so the rule predict chose on held-out
folds can be judged on test images it never saw.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import runs
from ncfm.boxes import detection_quality
from ncfm.calibrate import kaggle_log_loss


def task_rules(root: Path, comp) -> int:
    """Each answer rule of calibration.json on the run's averaged test outputs, scored on test_truth.csv."""
    from ncfm import task

    data, run = root / "data", root / "runs" / "demo"
    calibration = runs.read_calibration(run)
    truth = pd.read_csv(data / "test_truth.csv", dtype=str, keep_default_na=False)
    manifest = pd.read_csv(data / "folds.csv", dtype=str, keep_default_na=False)
    outputs = []
    for fold in runs.trained_folds(run):
        saved = pd.read_csv(runs.predictions_path(run, calibration["stage"], fold, calibration["tta"]), dtype={0: str})
        outputs.append(saved.set_index(saved.columns[0]).loc[truth.iloc[:, 0], list(comp.classes)].to_numpy("float64"))
    outputs = np.mean(outputs, axis=0)
    true = task.truth(comp, truth.iloc[:, 1])
    print(f"{'answer rule':<12} {'OOF (fitted on all)':>20} {'OOF held out':>13} {'test':>8}   ({comp.metric_name}; "
          f"{len(truth)} hidden test images)")
    for name, v in calibration["answer"]["scores"].items():
        test = task.score_answers(comp, true, task.decide(comp, outputs, v["rule"]))
        chosen = "  <- predict's choice" if name == calibration["answer"]["chosen"] else ""
        print(f"{name:<12} {v['on_oof']:>20.4f} {v['held_out']:>13.4f} {test:>8.4f}{chosen}")
    blind = task.blind_scores(comp, manifest.label, manifest.fold, truth.iloc[:, 1])
    print(f"{'blind':<12} {blind['fixed']:>20.4f} {blind['held_out']:>13.4f} {blind['test']:>8.4f}   (ignoring the "
          f"image: {task.BASELINE[comp.kind]}; its rule, {blind['chosen']}, fitted as the model's)")
    return 0


def main(root: Path) -> int:
    from ncfm.competition import load, path_beside

    data = root / "data"
    comp = load(path_beside(data / "folds.csv"))
    if comp.task != "single":
        return task_rules(root, comp)
    truth = pd.read_csv(data / "test_truth.csv")
    print(f"{'submission':<24} {'stage 1':>8} {'stage 2':>8}   (log loss on the held-out test images)")
    for csv in sorted((root / "submissions").glob("*.csv")):
        sub = pd.read_csv(csv)
        classes = list(sub.columns[1:])
        merged = truth.merge(sub, on="image")
        scores = []
        for stage in (1, 2):
            rows = merged[merged.stage == stage]
            y = rows.label.map({c: i for i, c in enumerate(classes)}).to_numpy()
            scores.append(kaggle_log_loss(y, rows[classes].to_numpy("float64")) if len(rows) else np.nan)
        print(f"{csv.stem:<24} {scores[0]:>8.4f} {scores[1]:>8.4f}")

    boxes = data / "test_boxes.csv"
    detector = root / "runs" / "detector"
    if boxes.is_file() and detector.is_dir():
        test_boxes = pd.read_csv(boxes)
        paths = truth.assign(path=np.where(truth.stage == 1, "test_stg1/" + truth.image, truth.image))
        fish = list(paths.path[paths.label != "NoF"])
        empty = list(paths.path[paths.label == "NoF"])
        print(f"\n{'detector fold':<16} {'recall@0.5':>10} {'top-1 hit':>10} {'best IoU':>9} {'fish AUC':>9}"
              "   (on the held-out test images, both stages)")
        for fold in runs.all_folds(detector):
            for stage in (2, 1):
                path = fold.test_boxes(stage)
                if path.is_file():
                    q = detection_quality(runs.read_found_boxes(path), test_boxes, fish, empty)
                    print(f"{fold.name + f' (stage {stage})':<16} {q['recall@0.5']:>10.3f} {q['top1@0.5']:>10.3f} "
                          f"{q['best_iou']:>9.3f} {q['fish_auc']:>9.3f}")
                    break
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo")))
