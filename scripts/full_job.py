#!/usr/bin/env python3
"""Time a full NCFM-sized job end to end with the real commands, as a user would run them:

  make_synthetic (3,777 train + 1,000 + 12,153 test images at full size)
  -> split_train_val -> train every fold (one `ncfm train --folds all` command) -> predict stage 2
  with TTA [-> boxes -> one detector fold, with --detector-epochs]

Each step's wall time (compilation included) goes to a JSON file as soon as it finishes, so a
run cut short keeps what it measured. On the GPU machine (after its set-up lines, as in scripts/bench.py):

    python3 scripts/full_job.py --work /tmp/ncfm_job --out $OUT/full_job.json --batch-size 128

Data generation is timed but is not part of the job (Kaggle ships the images). --fold-per-call
trains each fold with its own `ncfm train --fold K` instead, as the job was typed before
`--folds` existed. The JSON also gets each fold's phase-2 training rate (training images over
the epoch's seconds, validation included, first epoch of the phase left out) and, with
--detector-epochs, the detector's (fold 0 only: a rate, not the crop path's wall time).

The job may not fit one call of the GPU machine (10 minutes per command). --deadline-s N starts
no step once N seconds have passed since launch, so the call ends between steps instead of being
killed inside one; rerun the same command with --continue (same --work and --out) to run the
steps not yet done. The job time is the sum of the steps' own times either way. A step done in
a later process on the same machine finds the same data, runs and JAX compilation cache, as it
would in one long job; on a fresh machine, start over without --continue.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/ncfm_job", help="folder for data and runs")
    p.add_argument("--out", default="full_job.json", help="JSON file of step timings")
    p.add_argument("--n-train", type=int, default=3777)
    p.add_argument("--n-test1", type=int, default=1000)
    p.add_argument("--n-test2", type=int, default=12153)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--head-epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=299)
    p.add_argument("--tta", type=int, default=8)
    p.add_argument("--stage", type=int, default=2)
    p.add_argument("--data-on-device", action="store_true",
                   help="train with the image cache held on the device (ncfm train --data-on-device true)")
    p.add_argument("--fold-per-call", action="store_true",
                   help="one `ncfm train --fold K` process per fold instead of one `--folds all` command")
    p.add_argument("--detector-epochs", type=int, default=0,
                   help="then import the boxes and train detector fold 0 for this many epochs (0: no detector)")
    p.add_argument("--detector-size", type=int, default=512)
    p.add_argument("--deadline-s", type=float, default=0,
                   help="start no step after this many seconds (0: no limit)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="skip the steps that --out records as done (exit 0)")
    args = p.parse_args()

    launched = time.perf_counter()
    work = Path(args.work)
    data, run = work / "data", work / "runs" / "job"
    out = Path(args.out)
    result = {"args": vars(args), "steps": []}
    if args.resume:
        if not out.is_file():
            p.error(f"--continue: {out} not found; run once without --continue")
        result["steps"] = [s for s in json.loads(out.read_text())["steps"] if s["exit"] == 0]
    done = {s["step"] for s in result["steps"]}

    def step(name, argv):
        if name in done:
            print(f"== {name}: done in an earlier call, skipped", flush=True)
            return
        if args.deadline_s and time.perf_counter() - launched > args.deadline_s:
            result["stopped_before"] = name
            out.write_text(json.dumps(result, indent=1))
            print(f"== deadline: stopping before {name}; rerun with --continue", flush=True)
            raise SystemExit(3)
        result.pop("stopped_before", None)
        t = time.perf_counter()
        print(f"\n== {name}: ncfm {' '.join(argv)}", flush=True)
        code = subprocess.call([sys.executable, "-m", "ncfm.cli", *argv])
        seconds = time.perf_counter() - t
        result["steps"].append({"step": name, "seconds": round(seconds, 1), "exit": code})
        result["job_seconds"] = round(sum(s["seconds"] for s in result["steps"] if s["step"] != "make_synthetic"), 1)
        out.write_text(json.dumps(result, indent=1))
        print(f"== {name}: {seconds:.1f} s (exit {code})", flush=True)
        if code:
            raise SystemExit(code)

    if not (data / "sample_submission_stg2.csv").is_file():
        done.discard("make_synthetic")
        step("make_synthetic", ["make_synthetic", str(data), "--n-train", str(args.n_train), "--n-test1",
                                str(args.n_test1), "--n-test2", str(args.n_test2), "--scale", "1.0", "--force"])
    step("split_train_val", ["split_train_val", "--data-dir", str(data), "--folds", str(args.folds), "--force"])
    classify = ["--data-dir", str(data), "--run", str(run), "--weights", "none", "--epochs", str(args.epochs),
                "--head-epochs", str(args.head_epochs), "--batch-size", str(args.batch_size),
                "--image-size", str(args.image_size), "--patience", "0",
                *(["--data-on-device", "true"] if args.data_on_device else [])]
    if args.fold_per_call:
        for k in range(args.folds):
            step(f"train fold {k}", ["train", "--fold", str(k), *classify, "--retrain"])
    else:
        step("train all folds", ["train", "--folds", "all", *classify])
    result["train_rates"] = {f"fold {k}": training_rate(run, data, k, phase=2) for k in range(args.folds)}
    out.write_text(json.dumps(result, indent=1))
    step("predict", ["predict", "--data-dir", str(data), "--run", str(run), "--stage", str(args.stage),
                     "--tta", str(args.tta), "--out", str(work / "submission.csv"), "--force"])
    if args.detector_epochs:
        detector = work / "runs" / "detector"
        step("boxes", ["boxes", "--data-dir", str(data), "--force"])
        step("detect fold 0", ["detect", "--data-dir", str(data), "--fold", "0", "--run", str(detector),
                               "--weights", "none", "--epochs", str(args.detector_epochs), "--patience", "0",
                               "--image-size", str(args.detector_size)])
        result["detector_rate"] = training_rate(detector, data, 0)
        out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


def training_rate(run: Path, data: Path, k: int, phase: int | None = None) -> dict | None:
    """Training images per second of fold k of a run from its history: images trained per epoch over
    the epoch's seconds (validation and checkpoints included, so a floor), the first epoch of the
    phase (compilation) left out."""
    import pandas as pd

    from ncfm import runs

    h, folds = runs.read_history(runs.fold_of(run, k)), data / "folds.csv"
    if h is None or not folds.is_file():
        return None
    if phase is not None and "phase" in h:
        h = h[h.phase == phase]
    seconds = h.seconds.iloc[1:]
    if seconds.empty:
        return None
    n_train = int((pd.read_csv(folds).fold != k).sum())
    return {"train_images": n_train, "epochs_timed": len(seconds), "median_epoch_s": round(float(seconds.median()), 3),
            "images_per_s": round(n_train / float(seconds.median()), 1)}


if __name__ == "__main__":
    sys.exit(main())
