#!/usr/bin/env bash
# The foundation (issue 2) on one H200: compile gpt2 fp16 for --seq 1:1024 --batch 1:8 with the
# inductor backend, reload it, verify the whole default sweep, generate; then the GPU-marked tests.
# Run through the device tool from the repo root; results land in $OUT (or bench/results/gpu_run).
set -uo pipefail
OUT=${OUT:-bench/results/gpu_run}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())' | tee "$OUT/foundation.log"
ENG=/tmp/engines/gpt2-fp16
run() { echo "\$ $*" | tee -a "$OUT/foundation.log"; /usr/bin/time -f "(%e s)" "$@" 2>&1 | tee -a "$OUT/foundation.log"; }
run python3 -m dynashape doctor random:gpt2 --seq 1:1024 --batch 1:8 --dtype float16 --try
run python3 -m dynashape compile random:gpt2 --seq 1:1024 --batch 1:8 --backend inductor --device cuda --dtype float16 -o $ENG --force
echo "\$ python3 -m dynashape verify $ENG --json" | tee -a "$OUT/foundation.log"
python3 -m dynashape verify $ENG --json > "$OUT/verify_gpt2_fp16_inductor.json" 2>>"$OUT/foundation.log"
python3 - "$OUT/verify_gpt2_fp16_inductor.json" <<'PY' | tee -a "$OUT/foundation.log"
import json, sys
r = json.load(open(sys.argv[1]))
worst = max(r["results"], key=lambda x: x["max_abs_err"])
print(f"verify ok={r['ok']} points={len(r['results'])} worst max|err|={worst['max_abs_err']:.3g} at {worst['batch']}x{worst['seq']} "
      f"min top1={min(x['top1'] for x in r['results']):.4f}")
PY
run python3 -m dynashape generate $ENG --prompt-ids 464,3290,318 --max-new-tokens 20
# CUDA fp32 + sdpa adds an alignment guard (seq*(8+seq-seq%8) > 1): the export must retry with run-time asserts
run python3 -m dynashape compile random:tiny --seq 1:64 --batch 1:3 --backend eager --device cuda --dtype float32 -o /tmp/engines/tiny-fp32 --force
run python3 -m dynashape verify /tmp/engines/tiny-fp32
run python3 -m pytest -q -m gpu tests -p no:cacheprovider
