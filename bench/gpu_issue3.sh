#!/usr/bin/env bash
# Issue 3 on one GPU (the H200): GPU tests, a decode profile, and the side-by-side generation bench.
#   bash bench/gpu_issue3.sh [MODE...]    MODE: all (default: bench, tests, profile) | bench | tests |
#                                         quicktests (CUDA graph = eager only) | profile | ours (our rows only)
#                                         | ab (decode attention kernel vs matmul in one process, + GPU tests)
#                                         | ab2 (runtime options: unpadded vs padded lm_head, F.linear at batch 1)
# Results go to $OUT (the device tool's folder) or bench/results/. Copy the JSON and PNG into
# bench/results/ in the repository; the JSON carries the exact command and the machine facts.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
modes=" ${*:-all} "
want() { [[ $modes == *" all "* || $modes == *" $1 "* ]]; }
# a fresh inductor cache, so compile_s is what a first-time user pays
export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used --format=csv,noheader
python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)"

if want bench; then
  echo "== bench: HF eager, HF static cache + torch.compile, dynashape"
  timeout ${BENCH_TIMEOUT:-380} python3 -m dynashape.bench --model random:gpt2 --dtype float16 --device cuda \
    --budget-s ${BUDGET_S:-130} --systems dynashape,hf_eager,hf_static_compile --out "$OUT/h200_generate_gpt2_fp16" \
    2>&1 | grep -v "Online softmax\|split the reduction\|important use case\|online softmax\|warnings.warn\|^$" | tail -40
fi
if want tests || want quicktests; then
  echo "== GPU tests"
  sel=$(want tests && echo "" || echo "-k cuda_graph_decode_equals_eager")
  timeout ${TESTS_TIMEOUT:-300} python3 -m pytest tests/test_fastgen.py tests/test_gpt2_runtime.py -m gpu $sel -q -s \
    -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | grep -E "passed|failed|error|agreement|Error" | tail -15
fi
if want profile; then
  echo "== decode profile (first call includes compile + capture)"
  for size in ${PROFILE_SIZES:-1,512 64,512}; do
    timeout 200 python3 -m dynashape.bench --model random:gpt2 --dtype float16 --device cuda --new-tokens 128 \
      --profile "$size" 2>&1 | grep -v "^USDT\|^STAGE" | tee -a "$OUT/profile.txt" | grep -v "warn\|softmax\|reduction\|^$" | head -16
  done
fi
if [[ $modes == *" ours "* ]]; then
  echo "== bench, dynashape only"
  TORCH_LOGS=recompiles timeout 300 python3 -m dynashape.bench --model random:gpt2 --dtype float16 --device cuda \
    --systems dynashape --out "$OUT/h200_generate_gpt2_fp16_ours" 2>&1 | tee "$OUT/ours.log" \
    | grep -v "^V.*\(User stack\|  File\|    -     \)" | cut -c1-260 | tail -40
fi
if [[ $modes == *" ab "* ]]; then
  echo "== A/B decode attention (GPU tests run beside the compile phase; timing waits for them)"
  rm -f "$OUT/tests.done"
  ( timeout ${TESTS_TIMEOUT:-240} python3 -m pytest tests/test_fastgen.py tests/test_gpt2_runtime.py -m gpu -q -s \
      -p no:cacheprovider > "$OUT/gpu_tests.log" 2>&1; touch "$OUT/tests.done" ) &
  timeout ${AB_TIMEOUT:-390} python3 bench/ab_decode.py --out "$OUT/h200_decode_ab_gpt2_fp16.json" \
    --variants kernel,matmul --wait-for "$OUT/tests.done" 2>&1 | tee "$OUT/ab.log" | grep -v "softmax\|reduction\|important use\|warnings.warn\|^$"
  wait
  echo "== GPU tests"; grep -E "passed|failed|error|agreement|Error|assert" "$OUT/gpu_tests.log" | tail -20
fi
if [[ $modes == *" ab2 "* ]]; then
  echo "== A/B runtime options in one process: old (vocab 50257) vs pad64 (50304) vs pad64_linear (batch 1)"
  timeout ${AB_TIMEOUT:-320} python3 bench/ab_decode.py --out "$OUT/h200_decode_ab2_gpt2_fp16.json" \
    --variants old,pad64,pad64_linear --b1-only pad64_linear 2>&1 | tee "$OUT/ab2.log" \
    | grep -v "softmax\|reduction\|important use\|warnings.warn\|^$"
fi
