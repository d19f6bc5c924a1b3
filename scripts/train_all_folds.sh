#!/usr/bin/env bash
# Train every fold of a run, one after another (each `ncfm train` call is resumable).
#
#   scripts/train_all_folds.sh RUN_DIR [extra ncfm train flags...]
#   FOLDS=5 DATA_DIR=data scripts/train_all_folds.sh runs/inception299 --epochs 25
#
# Folds are independent, so they parallelise across GPUs or machines that share the run folder
# and the data (the manifest fixes every split): one fold per GPU, e.g.
#   for k in 0 1 2 3 4; do CUDA_VISIBLE_DEVICES=$k ncfm train --fold $k --run runs/x & done; wait
# or one `ncfm train --fold k` per machine. Then `ncfm predict --run runs/x` ensembles them.
set -euo pipefail
run=${1:?usage: scripts/train_all_folds.sh RUN_DIR [ncfm train flags...]}
shift
folds=${FOLDS:-$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['n_folds'])" "${DATA_DIR:-data}/folds.json" 2>/dev/null || echo 5)}
for ((k = 0; k < folds; k++)); do
  echo "== fold $k of $folds =="
  ncfm train --fold "$k" --run "$run" --data-dir "${DATA_DIR:-data}" "$@"
done
