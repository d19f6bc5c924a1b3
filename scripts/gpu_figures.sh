#!/usr/bin/env bash
# The GPU figures of one lease, in two calls of at most ~10 minutes each (after the machine's
# set-up lines, which install the Keras wheels carried in .whl/; results go to $OUT, the job's files stay in $WORK between
# calls on the same warm machine):
#
#   bash scripts/gpu_figures.sh rate  # the training rate beside the PyTorch peer, nothing else
#                                   # running: ncfm bf16 fed from the host, then from the cache on
#                                   # the device (--data-on-device), then the peer (about 5 min)
#   bash scripts/gpu_figures.sh 1   # PyTorch peer while make_synthetic draws the NCFM-sized data,
#                                   # then scripts/full_job.py until its deadline
#   bash scripts/gpu_figures.sh 2   # the same job continued (--continue): what call 1 left,
#                                   # then one detector fold for its training rate
#
# Sizes can be made small for a dry run on a CPU: N_TRAIN, N_TEST1, N_TEST2, SCALE, IMAGE_SIZE,
# EPOCHS, HEAD_EPOCHS, BATCH, DET_SIZE, DET_EPOCHS, PEER=0 (no PyTorch peer), LIMIT_S.
set -uo pipefail
part=${1:?usage: gpu_figures.sh rate|1|2}
OUT=${OUT:?set OUT to the folder for results}
WORK=${WORK:-/tmp/ncfm_job}
LIMIT_S=${LIMIT_S:-570}  # the call's own limit is 600 s: leave time to copy the results
N_TRAIN=${N_TRAIN:-3777} N_TEST1=${N_TEST1:-1000} N_TEST2=${N_TEST2:-12153} SCALE=${SCALE:-1.0}
IMAGE_SIZE=${IMAGE_SIZE:-299} EPOCHS=${EPOCHS:-25} HEAD_EPOCHS=${HEAD_EPOCHS:-3} BATCH=${BATCH:-128}
DET_SIZE=${DET_SIZE:-512} DET_EPOCHS=${DET_EPOCHS:-3}
mkdir -p "$WORK" "$OUT"
job=(python3 scripts/full_job.py --work "$WORK" --out "$WORK/full_job.json" --n-train "$N_TRAIN"
     --n-test1 "$N_TEST1" --n-test2 "$N_TEST2" --image-size "$IMAGE_SIZE" --epochs "$EPOCHS"
     --head-epochs "$HEAD_EPOCHS" --batch-size "$BATCH" --detector-epochs "$DET_EPOCHS"
     --detector-size "$DET_SIZE")

if [ "$part" = rate ]; then
    timeout -s KILL "$LIMIT_S" python3 scripts/bench.py --which ncfm,torch --ncfm-precisions mixed_bfloat16 \
        --ncfm-opt data_on_device=true --ncfm-opt decode_single=false --image-size "$IMAGE_SIZE" \
        --batch-size "$BATCH" --steps 30 --warmup 5 --n-images 512 --predict-batch-size "$BATCH" \
        --predict-steps 10 --data-dir /tmp/bench_data --out "$OUT/rate.md" --json "$OUT/rate.json" 2>&1 \
        | tee "$OUT/rate.log"
    exit 0
elif [ "$part" = 1 ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
    if [ "${PEER:-1}" = 1 ]; then  # its data is on the GPU: the CPU drawing images beside it costs it little
        python3 scripts/bench.py --which torch --image-size "$IMAGE_SIZE" --batch-size "$BATCH" --steps 30 \
            --warmup 5 --n-images 64 --predict-batch-size "$BATCH" --predict-steps 10 \
            --data-dir /tmp/bench_data --out "$OUT/peer.md" --json "$OUT/peer.json" >"$OUT/peer.log" 2>&1 &
        peer=$!
    fi
    start=$SECONDS
    python3 -m ncfm.cli make_synthetic "$WORK/data" --n-train "$N_TRAIN" --n-test1 "$N_TEST1" \
        --n-test2 "$N_TEST2" --scale "$SCALE" --force >"$OUT/synth.log" 2>&1
    echo "make_synthetic: $((SECONDS - start)) s (exit $?), beside the PyTorch peer" >>"$OUT/synth.log"
    [ -n "${peer:-}" ] && wait "$peer"
    left=$((LIMIT_S - SECONDS))
    # a step that starts later than this would not end in the call; the next call continues
    timeout -s KILL "$left" "${job[@]}" --deadline-s $((left - 120)) 2>&1 | tee "$OUT/full_job.log"
else
    timeout -s KILL "$LIMIT_S" "${job[@]}" --continue --deadline-s $((LIMIT_S - 90)) 2>&1 | tee "$OUT/full_job2.log"
    cp "$WORK/runs/detector/fold0/history.csv" "$OUT/detector_history.csv" 2>/dev/null
fi
cp "$WORK/full_job.json" "$WORK/runs/job/members.csv" "$OUT/" 2>/dev/null
exit 0
