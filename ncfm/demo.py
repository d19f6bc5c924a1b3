"""The whole journey offline, on a CPU, in minutes: the README's main job.

    ncfm demo [--dir demo]

make_synthetic -> split_train_val -> train every fold -> predict (NCFM: stage 2) with TTA ->
validate, with a randomly initialised InceptionV3 (--weights none) at a small image size. Each
step is the very command a user would type, printed before it runs. --layout runs it on the
files of another competition's shape (dog-breed, plant-seedlings, aerial-cactus), or of one whose
answer is not one class per image (planet: several labels; pawpularity: a number; aptos: a grade).
Those three end by scoring the submission on the hidden test labels (test_truth.csv) beside an
answer that ignores the image.

Its defaults (3 folds, 24 epochs of batch 32 at 75 px) were chosen on the demo's own data by
cross-validated OOF log loss over several seeds, against always predicting the class shares;
the figures are in docs/demo/README.md.
"""

from __future__ import annotations

import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import NcfmError


FLOAT32 = ["--mixed-precision", "off"]


def main(args, run_command) -> int:
    """Run the journey; `run_command(argv) -> exit code` is the `ncfm` command itself (handed
    down by the command layer, so each step is exactly what a user would type)."""
    from ncfm import runs
    from ncfm.competition import load, path_beside

    root = _fresh_folder(Path(args.dir), args.force)
    data, run = root / "data", root / "runs" / "demo"
    ncfm_layout = args.layout == "ncfm"
    submission = root / "submissions" / ("demo_stage2.csv" if ncfm_layout else "demo.csv")
    stage = ["--stage", "2"] if ncfm_layout else []
    started = time.time()

    def step(*argv) -> None:
        print(f"\n$ ncfm {shlex.join(argv)}", flush=True)
        code = run_command(list(argv))
        if code:
            raise NcfmError(f"demo step failed (exit {code}): ncfm {shlex.join(argv)}")

    crops = getattr(args, "crops", False)
    if crops and not ncfm_layout:
        raise NcfmError(f"--crops needs fish boxes, which only the ncfm layout draws; received --layout {args.layout}")
    # with --crops, fish-like decoys on every frame: a detector that fires on anything fish-coloured
    # and fish-sized meets them, as it meets crates and gear on real decks
    decoys = getattr(args, "decoys", None)
    decoys = (3 if crops else 0) if decoys is None else decoys
    step("make_synthetic", str(data), "--n-train", str(args.n_train), "--layout", args.layout,
         *(["--scale", "0.25", "--small-fish"] if crops else ["--scale", "0.15"]),
         *(["--decoys", str(decoys)] if decoys else []))
    # with --crops two folds: it trains three models per fold (whole images, detector, crops) on 2 cores
    folds = args.folds if args.folds is not None else 2 if crops else 3
    step("split_train_val", "--data-dir", str(data), "--folds", str(folds))
    # with --crops both classifiers get 12 epochs: on small fish the whole-image one peaked at
    # epoch 5-11 of 24, and a detector and a second classifier have to fit in the time
    epochs = args.epochs if args.epochs is not None else 12 if crops else 24
    classify = ["--weights", "none", "--image-size", str(args.image_size), "--epochs", str(epochs),
                # from scratch the validation loss of a few hundred images swings from epoch to
                # epoch: early stopping would end runs that are still learning
                "--head-epochs", "1", "--batch-size", str(args.batch_size), "--patience", "0", "--tensorboard", "false",
                # float32 on every CPU, so the demo's figures do not depend on whether it has AMX: at 75 px
                # bfloat16 trained fold 0 only 3% faster (136 s against 140 s), to OOF log loss 1.84 against 1.53
                *FLOAT32]
    # every fold from one command, one after another here (on a CPU Ray would only add processes)
    step("train", "--data-dir", str(data), "--folds", "all", "--no-ray", "--run", str(run), *classify)
    step("predict", "--data-dir", str(data), "--run", str(run), *stage, "--tta", str(args.tta),
         "--out", str(submission))
    comp = load(path_beside(data / "folds.csv"))
    calibration = runs.read_calibration(run) or {}
    scores = {}
    if crops:  # detect -> crop -> classify, then the blend of both paths
        scores["whole image"] = _oof_scores(calibration)
        run, submission = _crop_path(step, args, root, data, run, folds, classify, stage, scores)
        calibration = runs.read_calibration(run) or {}
    step("validate", str(submission), "--data-dir", str(data), *stage)

    shares = pd.read_csv(data / "folds.csv", dtype={"label": str}).label.value_counts(normalize=True).to_numpy()
    minutes = (time.time() - started) / 60
    if comp.task != "single":
        score = _task_scores(comp, data, submission, calibration)
    elif comp.metric == "log_loss":
        prior_loss = float(-(shares * np.log(shares)).sum())  # always predicting the class shares
        calibrated = (f"after calibration {calibration['after']:.4f}" if calibration.get("applied", True)
                      else "calibration not applied (no gain on held-out folds)")
        score = (f"cross-validated OOF log loss: {calibration['before']:.4f}, {calibrated}\n"
                 f"                                (guessing uniformly: {np.log(comp.num_classes):.4f}; "
                 f"always the class shares: {prior_loss:.4f})")
    else:
        score = (f"cross-validated OOF {comp.metric_name}: {calibration.get('oof_score', float('nan')):.4f}"
                 f"{f' (the largest class alone: {shares.max():.4f})' if comp.metric == 'accuracy' else ' (chance: 0.5)'}")
    if crops:
        score += "\n\n  cross-validated OOF log loss     before calibration  after\n" + "\n".join(
            f"    {name:<28} {before:>10.4f}  {after:>10.4f}{note}" for name, (before, after, note) in scores.items())
        weights = calibration.get("run_weights", {})
        score += "\n  blend weights fitted on OOF: " + ", ".join(f"{Path(r).name} {w:.2f}" for r, w in weights.items())
    print(f"""
Demo finished in {minutes:.1f} min.
  {score}
  submission (validated):       {submission}
  report:                       {run / 'report.html'}

With a real competition's files unzipped into data/ (kaggle competitions download -c SLUG) and
ImageNet weights (or --weights PATH on an offline machine):
  ncfm split_train_val --data-dir data
  ncfm train --folds all --run runs/inception299       # every fold; with Ray, one per GPU
  ncfm predict --run runs/inception299 --tta 8          # NCFM: --stage 1 or 2
  ncfm submit submissions/inception299.csv -m "InceptionV3 5-fold, TTA 8"
""")
    return 0


def _fresh_folder(root: Path, force: bool) -> Path:
    """The demo's folder, emptied: a folder an earlier demo made is its own scratch space; anything
    else is not ours (--force replaces it)."""
    marker = root / ".ncfm-demo"
    if root.exists() and any(root.iterdir()):
        if not (force or marker.is_file()):
            raise NcfmError(f"{root}: not empty and not made by `ncfm demo`; pass --force to replace "
                            f"it, or --dir NEW")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    marker.write_text("made by ncfm demo; rerunning the demo replaces this folder\n")
    return root


def _crop_path(step, args, root: Path, data: Path, run: Path, folds: int, classify: list, stage: list,
               scores: dict) -> tuple[Path, Path]:
    """boxes -> a detector per fold -> a crop classifier -> its blend with the whole-image run `run`;
    returns (the crop run, which keeps the blend's calibration, the blend's submission)."""
    from ncfm import runs

    detector, crop_run = root / "runs" / "detector", root / "runs" / "crops"
    step("boxes", "--data-dir", str(data))
    for fold in range(folds):
        step("detect", "--data-dir", str(data), "--fold", str(fold), "--run", str(detector), "--test",
             "--weights", "none", "--backbone", "resnet_small", "--image-size", str(args.detector_size),
             "--epochs", str(args.detector_epochs), "--patience", "0", *FLOAT32,
             # a flush of its last.keras and best.keras took about 10 s on 2 cores, every 30 s by default
             "--checkpoint-seconds", "120")
    # one exact crop per true box (no jittered copies) halves the rows per epoch; with it and
    # 12 epochs fold 0 scored OOF log loss 0.81 (0.63 with two crops and 24 epochs; whole
    # images 1.72)
    step("train", "--data-dir", str(data), "--folds", "all", "--no-ray", "--run", str(crop_run),
         "--detector", str(detector), "--crop-jitters", "1", *classify)
    crop_submission = root / "submissions" / "crops_stage2.csv"
    step("predict", "--data-dir", str(data), "--run", str(crop_run), *stage, "--tta", str(args.tta),
         "--out", str(crop_submission))
    scores["crops"] = _oof_scores(runs.read_calibration(crop_run) or {})
    submission = root / "submissions" / "blend_stage2.csv"
    # run weights fitted on OOF (--run-weights confidence, per image by the detector's score, scored
    # the same on the decoy stand-in: 1.454 / 1.698 on the test stages against 1.455 / 1.703)
    step("predict", "--data-dir", str(data), "--run", str(crop_run), "--run", str(run), "--run-weights", "oof",
         *stage, "--tta", str(args.tta), "--out", str(submission))
    scores["blend"] = _oof_scores(runs.read_calibration(crop_run) or {})
    return crop_run, submission


def _task_scores(comp, data: Path, submission: Path, calibration: dict) -> str:
    """A task layout's figures (ncfm.task): the OOF score of predict's answer rule on folds it was not
    fitted on, of the fixed rule, and of an answer that ignores the image (fitted on the other folds);
    then the submission on the hidden test labels against the same kind of answer."""
    from ncfm import task

    manifest = pd.read_csv(data / "folds.csv", dtype=str, keep_default_na=False)
    answer = calibration.get("answer") or {}
    scores = answer.get("scores") or {}
    chosen = answer.get("chosen", "fixed")
    truth = pd.read_csv(data / "test_truth.csv", dtype=str, keep_default_na=False)
    made = pd.read_csv(submission, dtype=str, keep_default_na=False)
    both = truth.merge(made, on=comp.id_column, suffixes=("_true", ""))
    column = comp.columns[0]
    test = task.score_answers(comp, task.truth(comp, both[f"{column}_true"]), task.truth(comp, both[column]))
    blind = task.blind_scores(comp, manifest.label, manifest.fold, both[f"{column}_true"])
    fixed = scores.get("fixed", {}).get("held_out", float("nan"))
    return (f"cross-validated OOF {comp.metric_name}: {scores.get(chosen, {}).get('held_out', float('nan')):.4f} "
            f"(answer rule: {chosen}, scored on folds it was not fitted on; the fixed rule, "
            f"{task.FIXED_RULE[comp.kind]}: {fixed:.4f})\n"
            f"                                ignoring the image ({task.BASELINE[comp.kind]}): {blind['fixed']:.4f}; "
            f"its rule fitted as the model's ({blind['chosen']}): {blind['held_out']:.4f}\n"
            f"  on the {len(both)} hidden test images (test_truth.csv): {test:.4f}; ignoring the image: "
            f"{blind['test']:.4f}")


def _oof_scores(calibration: dict) -> tuple[float, float, str]:
    """(OOF log loss as predicted, after the calibration predict applied, the folds predict left out
    as no better than the class priors) from calibration.json."""
    before = calibration.get("before", calibration.get("oof_score", float("nan")))
    after = calibration.get("after", before) if calibration.get("applied", True) else before
    left_out = [Path(f).name for f in calibration.get("left_out") or []]
    note = f"  ({', '.join(left_out)} left out: no better than the class priors)" if left_out else ""
    return before, after, note
