"""The whole journey offline, on a CPU, in minutes: the README's main job.

    ncfm demo [--dir demo]

make_synthetic -> split_train_val -> train every fold -> predict stage 2 with TTA -> validate,
with a randomly initialised InceptionV3 (--weights none) at a small image size. Each step is
the very command a user would type, printed before it runs.

Its defaults (3 folds, 24 epochs of batch 32 at 75 px) were chosen on the demo's own data by
cross-validated OOF log loss over seeds 2016, 1 and 2, against 1.70 for always predicting the
class shares (docs/demo/README.md): 24 epochs of batch 32 give 1.56/1.60/1.60 in about 100 s a
fold; the former 14 epochs of batch 16 gave 1.80/1.64/1.62 in about 85 s.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import NcfmError


def main(args) -> int:
    from ncfm.cli import main as ncfm

    root = Path(args.dir)
    marker = root / ".ncfm-demo"
    if root.exists() and any(root.iterdir()):
        # a folder an earlier demo made is the demo's own scratch space; anything else is not ours
        if not (args.force or marker.is_file()):
            raise NcfmError(f"{root}: not empty and not made by `ncfm demo`; pass --force to replace "
                            f"it, or --dir NEW")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    marker.write_text("made by ncfm demo; rerunning the demo replaces this folder\n")
    data, run = root / "data", root / "runs" / "demo"
    submission = root / "submissions" / "demo_stage2.csv"
    started = time.time()

    def step(*argv) -> None:
        print(f"\n$ ncfm {shlex.join(argv)}", flush=True)
        code = ncfm(list(argv))
        if code:
            raise NcfmError(f"demo step failed (exit {code}): ncfm {shlex.join(argv)}")

    step("make_synthetic", str(data), "--n-train", str(args.n_train), "--scale", "0.15")
    step("split_train_val", "--data-dir", str(data), "--folds", str(args.folds))
    for fold in range(args.folds):
        step("train", "--data-dir", str(data), "--fold", str(fold), "--run", str(run),
             "--weights", "none", "--image-size", str(args.image_size), "--epochs", str(args.epochs),
             # from scratch the validation loss of a few hundred images swings from epoch to
             # epoch: early stopping would end runs that are still learning
             "--head-epochs", "1", "--batch-size", str(args.batch_size), "--patience", "0", "--tensorboard", "false")
    step("predict", "--data-dir", str(data), "--run", str(run), "--stage", "2", "--tta", str(args.tta),
         "--out", str(submission))
    step("validate", str(submission), "--data-dir", str(data), "--stage", "2")

    calibration = json.loads((run / "calibration.json").read_text())
    shares = pd.read_csv(data / "folds.csv").label.value_counts(normalize=True).to_numpy()
    prior_loss = float(-(shares * np.log(shares)).sum())  # always predicting the class shares
    minutes = (time.time() - started) / 60
    calibrated = (f"after calibration {calibration['after']:.4f}" if calibration.get("applied", True)
                  else "calibration not applied (no gain on held-out folds)")
    print(f"""
Demo finished in {minutes:.1f} min.
  cross-validated OOF log loss: {calibration['before']:.4f}, {calibrated}
                                (guessing uniformly: 2.0794; always the class shares: {prior_loss:.4f})
  submission (validated):       {submission}
  report:                       {run / 'report.html'}

With the real data (kaggle competitions download -c the-nature-conservancy-fisheries-monitoring,
unzipped into data/) and ImageNet weights (or --weights PATH on an offline machine):
  ncfm split_train_val --data-dir data
  for k in 0 1 2 3 4; do ncfm train --fold $k --run runs/inception299; done
  ncfm predict --run runs/inception299 --stage 1 --tta 8
  ncfm submit submissions/inception299_stage1.csv -m "InceptionV3 5-fold, TTA 8"
""")
    return 0
