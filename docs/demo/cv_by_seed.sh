#!/usr/bin/env bash
# Cross-validated OOF log loss of the demo's training on its own data, for one setting and seed:
# the three `ncfm train` commands `ncfm demo` runs (its data in demo/data: run `ncfm demo` once),
# then the pooled OOF log loss, per-fold losses, accuracy and best epochs.
#
#   bash docs/demo/cv_by_seed.sh NAME [extra ncfm train flags...]   # e.g. b32e24s1 --batch-size 32 --epochs 24 --seed 1
#
# Later flags win, so the extras override the demo's former defaults written below.
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1; shift
out=${CV_OUT:-/tmp/ncfm_demo_cv}/$name
rm -rf "$out"; mkdir -p "$out"
start=$(date +%s)
for f in 0 1 2; do
  .venv/bin/ncfm train --data-dir demo/data --fold $f --run "$out" --weights none --image-size 75 \
    --epochs 14 --head-epochs 1 --batch-size 16 --patience 0 --tensorboard false "$@" > "$out/fold$f.log" 2>&1
done
.venv/bin/python - "$out" "$name" "$(( $(date +%s) - start ))" <<'PY'
import glob, sys

import pandas as pd
from sklearn.metrics import log_loss

from ncfm import CLASSES

CLASSES = list(CLASSES)

out, name, seconds = sys.argv[1:]
oof = [pd.read_csv(f) for f in sorted(glob.glob(f"{out}/fold*/oof.csv"))]
per_fold = [log_loss(d.label, d[CLASSES].to_numpy(), labels=CLASSES) for d in oof]
pooled = pd.concat(oof)
accuracy = (pooled[CLASSES].to_numpy().argmax(1) == pooled.label.map(CLASSES.index)).mean()
best = [int(pd.read_csv(f).sort_values("val_loss").epoch.iloc[0])
        for f in sorted(glob.glob(f"{out}/fold*/history.csv"))]
print(f"{name}: CV {log_loss(pooled.label, pooled[CLASSES].to_numpy(), labels=CLASSES):.4f} "
      f"folds {' '.join(f'{p:.3f}' for p in per_fold)} acc {accuracy:.3f} best_epochs {best} {seconds}s")
PY
