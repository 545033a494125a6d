#!/usr/bin/env bash
# GPU benchmarks in one go, for a borrowed H200 (device tool): encode and training speed against
# their baselines, measured in the same run. Budget: under 6 minutes in all (each step has a timeout).
#
#   bash gpu/bench.sh            # writes into $OUT (the device tool's folder), else results/bench
#
# Expects: python with torch (CUDA), transformers, sentence-transformers; the model folder at
# $MTST_MODEL (default $SCRATCH/mpnet as gpu/headline.sh unpacks it, a sentence-transformers folder, fp16 safetensors are fine: the
# baseline loads that same folder, our exact mode and the accuracy reference upcast it to fp32);
# the data folder at $MTST_DATA_DIR or shared/data, ../shared/data or .data (ag_news/test.csv,
# ag_news/train_subset_20k.csv or train.csv, conll2003/train.txt). No network is needed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/bench}
MODEL=${MTST_MODEL:-${SCRATCH:-${TMPDIR:-/tmp}/mtst-gpu}/mpnet}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
start=$(date +%s)

DATA=""
for d in "${MTST_DATA_DIR:-}" shared/data ../shared/data .data; do
  if [ -n "$d" ] && [ -f "$d/ag_news/test.csv" ] && [ -f "$d/conll2003/train.txt" ]; then DATA=$d; break; fi
done
if [ -z "$DATA" ]; then echo "no data folder found (set MTST_DATA_DIR)"; exit 2; fi
if [ ! -f "$MODEL/modules.json" ]; then echo "no sentence-transformers model folder at $MODEL"; exit 2; fi

# mtst.train imports its metrics (seqeval, scikit-learn) at import time; the benches never call
# them. Where those packages are missing, empty stand-ins satisfy the imports.
STUBS=$(mktemp -d)
"$PY" - "$STUBS" <<'EOF'
import importlib.util, pathlib, sys
root = pathlib.Path(sys.argv[1])
stubs = {
    "seqeval": {"__init__": "", "metrics/__init__": "classification_report = f1_score = precision_score = "
                "recall_score = None", "metrics/sequence_labeling": "get_entities = None", "scheme": "IOB2 = None"},
    "sklearn": {"__init__": "", "metrics/__init__": "confusion_matrix = f1_score = None",
                "model_selection/__init__": "train_test_split = None"},
}
for package, files in stubs.items():
    if importlib.util.find_spec(package) is None:
        print(f"{package} missing: using an import-only stand-in (the benches do not call it)")
        for name, text in files.items():
            path = root / package / f"{name}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")
EOF
export PYTHONPATH="$PYTHONPATH:$STUBS"

"$PY" - <<'EOF' 2>&1 | tee "$OUT/gpu-preflight.txt"
import torch, transformers, sentence_transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__,
      "sentence-transformers", sentence_transformers.__version__)
print("device", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
EOF

status=0
# Encode: the first 4,000 AG News test texts at batch 32, 3 timed rounds per contender;
# exact-sdpa shows what SDPA brings on the GPU.
timeout 150 "$PY" bench/encode.py --device cuda --model "$MODEL" --data "$DATA/ag_news/test.csv" \
  --n 4000 --batch-size 32 --repeats 3 --modes exact,exact-sdpa,bf16-autocast,bf16,fp16 --out "$OUT" 2>&1 | grep -v "Loading weights" | tee "$OUT/gpu-encode.log" \
  || status=1
echo "encode done after $(( $(date +%s) - start )) s"

# Training: ours at 32 (headline) and 128/256/512 per task, ours with eager attention at 32, the reference at 16.
timeout 170 "$PY" bench/train.py --device cuda --model "$MODEL" --data-dir "$DATA" --batch-sizes 32,128,256,512 \
  --steps 30 --warmup 5 --also-eager --out "$OUT" 2>&1 | grep -v "Loading weights" | tee "$OUT/gpu-train.log" \
  || status=1
echo "train done after $(( $(date +%s) - start )) s"

# The summary wants the CPU results next to the GPU ones.
cp -n results/bench/encode-cpu.json results/bench/train-cpu.json "$OUT"/ 2>/dev/null || true
"$PY" bench/summary.py --dir "$OUT" | tee "$OUT/gpu-summary.log" || status=1
echo "total $(( $(date +%s) - start )) s"
exit $status
