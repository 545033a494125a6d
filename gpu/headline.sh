#!/usr/bin/env bash
# The headline runs on a borrowed GPU (prepared here, run by a session that has one; see gpu/README.md).
# Expects: the fp16 weights pieces in $SCRATCH/w (meta/ + piece-0..5), the data in .data/, seqeval in .whl/.
# $SCRATCH (default ${TMPDIR:-/tmp}/mtst-gpu) holds the unpacked model, packages, runs and records.
# Leaves in $OUT: records.tgz (config, environment, history, metrics, plots of each run) and the log.
set -euo pipefail
export PYTHONUNBUFFERED=1
SCRATCH=${SCRATCH:-${TMPDIR:-/tmp}/mtst-gpu}
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SCRATCH/site" .whl/*.whl
export PYTHONPATH="$SCRATCH/site:$PWD"
mkdir -p "$SCRATCH/mpnet" && cp -r "$SCRATCH"/w/meta/* "$SCRATCH/mpnet/"
cat "$SCRATCH"/w/piece-{0..5} > "$SCRATCH/mpnet/model.safetensors"
(cd "$SCRATCH/mpnet" && sha256sum -c fp16.sha256)
export MTST_MODEL="$SCRATCH/mpnet" MTST_DATA_DIR="$PWD/.data" HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
run() {  # name, then overrides
  local name=$1; shift
  python3 -m mtst train --profile gpu --name "$name" --runs-dir "$SCRATCH/runs" --record-dir "$SCRATCH/rec/$name" \
    --cache-dir "$SCRATCH/cache" "$@" 2>&1 | tee -a "$OUT/log.txt"
  tar czf "$OUT/records.tgz" -C "$SCRATCH/rec" .   # after every run, so a timeout keeps what finished
}
run gpu-headline                                         # reference protocol: 9,600 / 2,400 AG + full CoNLL
run gpu-ag20k --set data.ag_train_fraction=None          # every available AG row: 16,000 / 4,000
run gpu-lora --set train.freeze=lora --set train.lr=5e-4 # the small shippable delta
