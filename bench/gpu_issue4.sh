#!/usr/bin/env bash
# Issue 4 on a GPU (run on the H200 through the device tool, from the repository root):
#   1. build an aoti engine for random:gpt2 fp16 on cuda, --seq 1:1024 --batch 1:8 (compile time);
#   2. reload it in a fresh process with empty Inductor/Triton caches (load time, and proof that
#      nothing was compiled again), check lengths/batches against the HF reference (fp32);
#   3. bench_backends eager,inductor,aoti,onnx on random:gpt2 fp16 cuda (onnxruntime without a CUDA
#      provider is recorded as skipped, with the reason).
# Writes $OUT/h200_aoti_gpt2.json and $OUT/h200_backends_gpt2_fp16.{json,png}.
# Usage: OUT=/tmp/out bash bench/gpu_issue4.sh [aoti|bench|diag|all]  (all: diag only when aoti failed)
set -uo pipefail
OUT=${OUT:-bench/results}
STEP=${1:-all}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONFAULTHANDLER=1  # a crash prints its Python stack
ENG=/tmp/dynashape-aoti-gpt2
export DEVICE=${DEVICE:-cuda} DTYPE=${DTYPE:-float16}  # DEVICE=cpu DTYPE=float32: a dry run off the GPU
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader || true
python3 -c "import torch, transformers, onnxruntime as o; print('torch', torch.__version__, 'transformers', transformers.__version__, 'onnxruntime', o.__version__, o.get_available_providers())"
command -v g++ c++ || echo "no g++ on PATH"

if [ "$STEP" = aoti ] || [ "$STEP" = all ]; then
timeout 240 python3 - "$ENG" "$OUT/aoti_build.json" <<'EOF'
import json, os, sys, time
t0 = time.perf_counter()
from dynashape.backends import CompileSettings
from dynashape.engine import build_engine
from dynashape.models import load_model
from dynashape.rules import PlanSettings, make_plan
from dynashape.shapes import parse_range
lm = load_model("random:gpt2")
plan = make_plan(lm.info(), PlanSettings(seq=parse_range("1:1024"), batch=parse_range("1:8"), dtype=os.environ["DTYPE"]))
engine = build_engine(lm, plan, CompileSettings(backend="aoti", device=os.environ["DEVICE"], dtype=os.environ["DTYPE"]), out=sys.argv[1])
engine.save(sys.argv[1], force=True)
build = {"export_s": engine.meta["export_s"], "compile_s": engine.meta["compile_s"],
         "build_process_wall_s": round(time.perf_counter() - t0, 2), "graph": {k: r.text() for k, r in plan.graph.items()}}
open(sys.argv[2], "w").write(json.dumps(build))
print("build", build)
EOF
rm -rf /tmp/fresh-inductor /tmp/fresh-triton
[ -f "$ENG/engine.json" ] && TORCHINDUCTOR_CACHE_DIR=/tmp/fresh-inductor TRITON_CACHE_DIR=/tmp/fresh-triton timeout 200 python3 - "$ENG" "$OUT" <<'EOF'
import json, os, sys, time
t_start = time.perf_counter()
import torch
from dynashape.bench_backends import machine_facts
from dynashape.engine import Engine
eng, out = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
engine = Engine.load(eng)
load_wall = time.perf_counter() - t0
ids = torch.randint(0, 50257, (8, 1024))
sync = torch.cuda.synchronize if engine.device.type == "cuda" else (lambda: None)
sync(); t0 = time.perf_counter(); engine(ids); sync()
first_call = time.perf_counter() - t0
ref = engine.reference_model(torch.float32).to(engine.device)
g = torch.Generator().manual_seed(0)
rows = []
for b, t in [(1, 1), (1, 2), (2, 3), (8, 1), (1, 1024), (8, 1024), (3, 1023), (5, 517), (4, 128), (7, 64)]:
    x = torch.randint(0, 50257, (b, t), generator=g)
    with torch.no_grad():
        got = engine(x).float()
        want = ref(input_ids=x.to(engine.device), use_cache=False).logits
    err = (got - want).abs().max().item()
    top1 = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    rows.append({"batch": b, "seq": t, "shape": list(got.shape), "max_abs_err": float(f"{err:.3g}"),
                 "top1_agree": round(top1, 4), "ok": err < 5e-2 and top1 >= 0.98 and list(got.shape) == [b, t, 50257]})
def generated(d):  # files written into a cache directory that was empty before the load: all, and
    # model code (sources > 2 KB; torch's CPU instruction-set probes are < 1 KB)
    files = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs] if os.path.isdir(d) else []
    code = [f for f in files if f.endswith((".cpp", ".py", ".h", ".ptx", ".cubin")) and os.path.getsize(f) > 2000]
    return {"files": len(files), "model_code_files": len(code)}
build = json.load(open(os.path.join(out, "aoti_build.json")))
res = {"command": (f"DEVICE={os.environ['DEVICE']} DTYPE={os.environ['DTYPE']} OUT={out} bash bench/gpu_issue4.sh aoti "
                   f"(build: dynashape compile random:gpt2 --seq 1:1024 --batch 1:8 --backend aoti --device "
                   f"{os.environ['DEVICE']} --dtype {os.environ['DTYPE']}; then Engine.load in a fresh process)"),
       "machine": machine_facts(os.environ["DEVICE"], os.environ["DTYPE"]), "engine": eng, "build": build,
       "load_s": round(engine.meta["load_s"], 3), "load_wall_s": round(load_wall, 3),
       "first_call_8x1024_s": round(first_call, 3), "process_to_ready_s": round(time.perf_counter() - t_start, 2),
       "compile_over_load": round(build["compile_s"] / max(engine.meta["load_s"], 1e-6), 1),
       "files_in_fresh_caches_after_load": {"inductor": generated("/tmp/fresh-inductor"),
                                            "triton": generated("/tmp/fresh-triton")},
       "checks": rows, "all_ok": all(r["ok"] for r in rows),
       "tolerance": "engine vs fp32 HF reference: max abs error < 5e-2 and top-1 agreement >= 98%"}
open(os.path.join(out, "h200_aoti_gpt2.json"), "w").write(json.dumps(res, indent=1) + "\n")
print(json.dumps({k: v for k, v in res.items() if k != "checks"}, indent=1))
for r in rows:
    print(r)
EOF
fi

if [ "$STEP" = bench ] || [ "$STEP" = all ]; then
LEFT=$(( ${DEADLINE_S:-585} - SECONDS )); [ "$LEFT" -lt 60 ] && LEFT=60  # stay inside one 10-minute call
timeout "$LEFT" python3 -m dynashape.bench_backends --model random:gpt2 --device cuda --dtype float16 \
  --backends eager,inductor,aoti,onnx --lengths 8,32,128,512,1024 --batch 1 --warmup 5 --iters 50 \
  --out "$OUT/h200_backends_gpt2_fp16"
fi
if [ "$STEP" = diag ] || { [ "$STEP" = all ] && [ ! -f "$OUT/h200_aoti_gpt2.json" ]; }; then
# Where does AOTInductor fail on this machine? Plain torch APIs, random:tiny, step markers + faulthandler.
for DT in float32 float16; do
LEFT=$(( ${DEADLINE_S:-585} - SECONDS )); [ "$LEFT" -lt 20 ] && break
echo "== aoti diagnosis random:tiny $DT (${LEFT}s left)"
timeout "$LEFT" python3 - "$DT" <<'EOF'
import sys, time, torch
from dynashape.export import example_inputs, export_plan
from dynashape.models import load_model
from dynashape.models.load import parse_dtype
from dynashape.rules import PlanSettings, make_plan
from dynashape.shapes import parse_range
def step(s):
    print("STEP", s, round(time.perf_counter() - t0, 1), flush=True)
t0 = time.perf_counter()
lm = load_model("random:tiny")
plan = make_plan(lm.info(), PlanSettings(seq=parse_range("1:64"), batch=parse_range("1:3"), dtype=sys.argv[1]))
model = lm.model.to("cuda", parse_dtype(sys.argv[1]))
step("export")
ep = export_plan(model, plan, "cuda").program
print("devices", {str(v.device) for v in ep.state_dict.values()}, "constants", {k: str(v.device) for k, v in ep.constants.items()})
print("cpu nodes", [str(n.target) for n in ep.graph.nodes if n.op == "call_function" and str(n.kwargs.get("device", "")) == "cpu"])
step("compile")
path = torch._inductor.aoti_compile_and_package(ep, package_path="/tmp/diag.pt2")
step("load")
runner = torch._inductor.aoti_load_package(path)
step("call")
out = runner(**example_inputs(plan, "cuda"))
torch.cuda.synchronize()
step("ok " + str(tuple(out.shape) if hasattr(out, "shape") else type(out)))
EOF
echo "== exit $?"
done
fi
ls -la "$OUT"
