"""The recipe ablation: which modern training pieces earn a place, judged on real photos that the
choice was not fitted to (Fashion-MNIST's own test split).

    apt-get install dataset-fashion-mnist
    python scripts/recipe_ablation.py WORK [--rows classic,mix,...] [--n-train 900] [--epochs 20]
        [--table docs/raw/cpu-2026-12-05/recipe_ablation.md]

WORK gets the data (scripts/fashion_mnist.py's Kaggle layout, 3 folds without groups), one run per
row (WORK/runs/ROW), its submission (WORK/submissions/ROW.csv) and its figures
(WORK/results/ROW.json). Every row trains the same backbone, image size, epochs and folds from the
same seed (`--weights none`: nothing pretrained can be downloaded here) and predicts the same way;
only its row's flags differ. A row whose results exist is not run again (delete its json to rerun),
so rows can be added as options land. The table has, per row: the pooled OOF log loss and accuracy
of the three folds, the fold ensemble's log loss and accuracy on the held-out test images (after
predict's calibration, as a user would submit it), and the median seconds per training epoch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fashion_mnist import per_image_log_loss, score as test_score, write_layout  # noqa: E402

# the flags each row adds to CLASSIC; "seed2" rows repeat a row with another seed
ROWS = {
    "classic": [],
    "classic_seed2": ["--seed", "2017"],
    "mix": ["--mix", "both"],
    "erasing": ["--erasing", "0.25"],
    "trivial": ["--randaugment", "trivial"],
    "randaugment": ["--randaugment", "2,9"],
    "ema": ["--ema", "0.99"],
    "ema_fast": ["--ema", "0.95"],  # a horizon of ~20 steps, one epoch here, where 0.99's is five
    "lr_decay": ["--optimizer", "adamw", "--lr-decay", "0.7"],
    "precise_bn": ["--precise-bn", "2048"],  # every training image of a fold here (576 in full batches)
    "all": ["--mix", "both", "--erasing", "0.25", "--randaugment", "trivial", "--ema", "0.99", "--lr-decay", "0.7"],
    "modern": ["--recipe", "modern"],
    "modern_seed2": ["--recipe", "modern", "--seed", "2017"],
}
# the demo's from-scratch settings: a random InceptionV3 at its smallest size, float32 everywhere
CLASSIC = ["--weights", "none", "--image-size", "75", "--head-epochs", "1", "--batch-size", "32",
           "--patience", "0", "--tensorboard", "false", "--mixed-precision", "off"]


def ncfm(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "ncfm.cli", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"ncfm {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


def oof_scores(run: Path) -> tuple[float, float]:
    from ncfm import runs
    from ncfm.calibrate import accuracy, kaggle_log_loss

    folds = runs.trained_folds(run)
    oof = pd.concat([runs.read_oof(f.oof, runs.fold_classes(f)) for f in folds])
    probs = oof[list(runs.fold_classes(folds[0]))].to_numpy("float64")
    return kaggle_log_loss(oof.y.to_numpy(), probs), accuracy(oof.y.to_numpy(), probs)


def epoch_seconds(run: Path) -> float:
    from ncfm import runs

    return float(np.median(pd.concat([runs.read_history(f) for f in runs.trained_folds(run)]).seconds))


def run_row(work: Path, row: str, epochs: int, tta: int) -> dict:
    out = work / "results" / f"{row}.json"
    if out.is_file():
        return json.loads(out.read_text())
    data, run, submission = work / "data", work / "runs" / row, work / "submissions" / f"{row}.csv"
    submission.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    ncfm("train", "--data-dir", str(data), "--folds", "all", "--no-ray", "--run", str(run),
         "--epochs", str(epochs), *CLASSIC, *ROWS[row])
    trained = time.time() - started
    ncfm("predict", "--data-dir", str(data), "--run", str(run), "--tta", str(tta), "--out", str(submission), "--force")
    oof_loss, oof_acc = oof_scores(run)
    test_loss, test_acc = test_score(data, submission)
    result = dict(row=row, flags=" ".join(ROWS[row]) or "(none)", oof_log_loss=oof_loss, oof_accuracy=oof_acc,
                  test_log_loss=test_loss, test_accuracy=test_acc, epoch_seconds=epoch_seconds(run),
                  train_minutes=trained / 60)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{row}: OOF {oof_loss:.4f} ({oof_acc:.3f}), test {test_loss:.4f} ({test_acc:.3f}), "
          f"{result['epoch_seconds']:.1f} s/epoch, {trained / 60:.1f} min", flush=True)
    return result


def precise_bn_after(work: Path, row: str, tta: int, n_images: int = 2048) -> dict:
    """Row ROW+pbn: the row's trained folds with --precise-bn's step applied to their best.keras (the
    same picked training images as `ncfm train --precise-bn`), then predicted as every row. Same
    weights, so the difference from ROW is precise BatchNorm's alone, free of training noise (two
    seeds differ here by more than most rows do). Per fold it also keeps the
    held-out fold's log loss before and after, and, as `ncfm train` does, keeps the new statistics only
    where that loss does not rise."""
    import shutil

    from ncfm import runs
    from ncfm.batches import read_rows
    from ncfm.cache import load_images
    from ncfm.folds import read_manifest
    from ncfm.train import precise_bn_rows, recompute_if_better

    name = f"{row}+pbn"
    out = work / "results" / f"{name}.json"
    if out.is_file():
        return json.loads(out.read_text())
    data, source, run = work / "data", work / "runs" / row, work / "runs" / name
    if not source.is_dir():
        raise SystemExit(f"{source}: run the row {row} first")
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(source, run)
    manifest, _ = read_manifest(data / "folds.csv")
    folds, per_fold = runs.trained_folds(run), []
    config = runs.read_config(folds[0])
    images = load_images(data, list(manifest.image), config["image_size"], progress=False)
    for fold in folds:
        config, classes = runs.read_config(fold), list(runs.fold_classes(fold))
        train_rows = np.flatnonzero(manifest.fold.to_numpy() != fold.index)
        val_rows = np.flatnonzero(manifest.fold.to_numpy() == fold.index)
        y = manifest.label.iloc[val_rows].map({c: i for i, c in enumerate(classes)}).to_numpy()
        best = runs.load_best(fold)
        picked = precise_bn_rows(train_rows, n_images, config["batch_size"], config["seed"] + fold.index)
        _, before, after, kept = recompute_if_better(best, "single", images, picked, config["batch_size"], val_rows,
                                                     np.eye(len(classes))[y], 64)
        if kept:
            runs.save_model(best, fold.best, classes=classes, record=runs.read_record(fold.best))
            probs = best.predict(read_rows(images, val_rows), batch_size=64, verbose=0)
            runs.write_oof(fold, manifest.image.iloc[val_rows], manifest.label.iloc[val_rows], probs, classes)
        per_fold.append(dict(fold=fold.index, val_log_loss_before=before, val_log_loss_after=after, kept=kept))
    submission = work / "submissions" / f"{name}.csv"
    ncfm("predict", "--data-dir", str(data), "--run", str(run), "--tta", str(tta), "--out", str(submission), "--force",
         "--recompute")
    oof_loss, oof_acc = oof_scores(run)
    test_loss, test_acc = test_score(data, submission)
    result = dict(row=name, flags=f"{json.loads((work / 'results' / f'{row}.json').read_text())['flags']} "
                  f"then --precise-bn {n_images}'s step on its weights", oof_log_loss=oof_loss,
                  oof_accuracy=oof_acc, test_log_loss=test_loss, test_accuracy=test_acc,
                  epoch_seconds=epoch_seconds(run), folds=per_fold)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{name}: OOF {oof_loss:.4f} ({oof_acc:.3f}), test {test_loss:.4f} ({test_acc:.3f}); held-out fold "
          f"before/after " + ", ".join(f"{f['val_log_loss_before']:.4f}/{f['val_log_loss_after']:.4f}"
                                       for f in per_fold), flush=True)
    return result


def table(results: list[dict]) -> str:
    lines = ["| row | flags | OOF log loss | OOF accuracy | test log loss (fold ensemble) | test accuracy | s/epoch |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['row']} | `{r['flags']}` | {r['oof_log_loss']:.4f} | {r['oof_accuracy']:.3f} | "
                     f"{r['test_log_loss']:.4f} | {r['test_accuracy']:.3f} | {r['epoch_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def paired_table(work: Path, pairs: list[tuple[str, str]]) -> str:
    """Row A against row B on the same test images: the mean per-image difference of log loss and its
    standard error (how far the 2,000 images alone could move it; the training noise that two
    trainings add is not in it, and for ROW -> ROW+pbn there is none: the weights are the same)."""
    lines = ["| from | to | test log loss | per-image difference (± s.e.) | images better |", "|---|---|---|---|---|"]
    for a, b in pairs:
        x, y = (per_image_log_loss(work / "data", work / "submissions" / f"{r}.csv") for r in (a, b))
        diff = y - x
        lines.append(f"| {a} | {b} | {x.mean():.4f} -> {y.mean():.4f} | {diff.mean():+.4f} ± "
                     f"{diff.std(ddof=1) / np.sqrt(len(diff)):.4f} | {np.mean(diff < 0):.0%} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("work", type=Path)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    p.add_argument("--n-train", type=int, default=900)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--tta", type=int, default=4)
    p.add_argument("--precise-bn-after", default="", help="comma-separated rows already run: add row+pbn, "
                   "the same trained folds with precise BatchNorm's step applied (a paired comparison)")
    p.add_argument("--pairs", default="", help="comma-separated A:B row pairs compared image by image on the test "
                   "images (ROW:ROW+pbn is added for each --precise-bn-after row)")
    p.add_argument("--table", type=Path, help="also write the table (markdown) here")
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    data = args.work / "data"
    if not (data / "folds.csv").is_file():
        write_layout(data, args.n_train, args.n_test, seed=0)
        ncfm("split_train_val", "--data-dir", str(data), "--folds", "3")
    results = [run_row(args.work, row, args.epochs, args.tta) for row in rows]
    after = [row.strip() for row in args.precise_bn_after.split(",") if row.strip()]
    results += [precise_bn_after(args.work, row, args.tta) for row in after]
    pairs = [tuple(pair.split(":", 1)) for pair in args.pairs.split(",") if ":" in pair]
    pairs += [(row, f"{row}+pbn") for row in after]
    text = table(results) + (f"\n{paired_table(args.work, pairs)}" if pairs else "")
    print(text)
    if args.table:
        args.table.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
