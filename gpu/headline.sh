#!/usr/bin/env bash
# The headline runs on a borrowed GPU (prepared here, run by a session that has one; see gpu/README.md).
# Expects: the fp16 weights pieces in /tmp/w (meta/ + piece-0..5), the data in .data/, seqeval in .whl/.
# Leaves in $OUT: records.tgz (config, environment, history, metrics, plots of each run) and the log.
set -euo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD"
mkdir -p /tmp/mpnet && cp -r /tmp/w/meta/* /tmp/mpnet/
cat /tmp/w/piece-{0..5} > /tmp/mpnet/model.safetensors
(cd /tmp/mpnet && sha256sum -c fp16.sha256)
export MTST_MODEL=/tmp/mpnet MTST_DATA_DIR="$PWD/.data" HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
run() {  # name, then overrides
  local name=$1; shift
  python3 -m mtst train --profile gpu --name "$name" --runs-dir /tmp/runs --record-dir "/tmp/rec/$name" \
    --cache-dir /tmp/cache "$@" 2>&1 | tee -a "$OUT/log.txt"
  tar czf "$OUT/records.tgz" -C /tmp/rec .   # after every run, so a timeout keeps what finished
}
run gpu-headline                                         # reference protocol: 9,600 / 2,400 AG + full CoNLL
run gpu-ag20k --set data.ag_train_fraction=None          # every available AG row: 16,000 / 4,000
run gpu-lora --set train.freeze=lora --set train.lr=5e-4 # the small shippable delta
