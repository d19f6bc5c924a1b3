#!/usr/bin/env bash
# Train every fold of a run, one after another (each `ncfm train` call is resumable).
#
#   scripts/train_all_folds.sh RUN_DIR [extra ncfm train flags...]
#   FOLDS=5 DATA_DIR=data scripts/train_all_folds.sh runs/inception299 --epochs 25
#
# `ncfm train --folds all --run runs/x` does the same in one command, one fold per GPU at a time
# when Ray is installed (and on a Ray cluster with --ray-address); see the README.
# Then `ncfm predict --run runs/x` ensembles them.
set -euo pipefail
run=${1:?usage: scripts/train_all_folds.sh RUN_DIR [ncfm train flags...]}
shift
folds=${FOLDS:-$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['n_folds'])" "${DATA_DIR:-data}/folds.json" 2>/dev/null || echo 5)}
for ((k = 0; k < folds; k++)); do
  echo "== fold $k of $folds =="
  ncfm train --fold "$k" --run "$run" --data-dir "${DATA_DIR:-data}" "$@"
done
