#!/usr/bin/env bash
# GPU work of one session, in stages: bash bench/gpu_session.sh STAGE [STAGE ...]; results under $OUT.
# Each stage has its own time limit and log ($OUT/STAGE.log); a failing stage is recorded, the next runs.
# A/B baselines (git archives, carried): .baseline/src = the FastGenerator of commit 6c8aaac (stage ab1),
# .baseline2/src = the previous session's final engine, commit 11c9def (stage ab).
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" engines
run() {  # run NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  local t0=$(date +%s)
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "[$name] rc=$rc $(( $(date +%s) - t0 )) s" | tee -a "$OUT/stages.txt"
  tail -n 4 "$OUT/$name.log"
}
BENCH="python3 -m dynashape.bench --dtype float16 --device cuda"
for stage in "$@"; do
  case $stage in
    env) run env 60 bash -c 'nvidia-smi; python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__, torch.cuda.get_device_name())"' ;;
    gputests) run gputests 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ ;;
    sweep) run sweep 290 python3 bench/kernel_sweep.py --out "$OUT/kernel_sweep.json" --budget-s ${SWEEP_S:-220} ;;
    compile) run compile_eager 150 python3 -m dynashape compile random:gpt2 --seq 1:1024 --batch 1:64 --device cuda \
               --dtype float16 -o engines/gpt2 --force --json
             run load_eager_1 60 python3 bench/load_probe.py engines/gpt2 --out "$OUT/load_eager_1.json"
             run load_eager_2 60 python3 bench/load_probe.py engines/gpt2 --out "$OUT/load_eager_2.json" ;;
    coldload) # compile and load with an empty Triton cache: what a fresh machine pays (compiled_at_load: none)
              rm -rf ~/.triton/cache
              run compile_cold 300 python3 -m dynashape compile random:gpt2 --seq 1:1024 --batch 1:64 --device cuda \
                --dtype float16 -o engines/gpt2 --force --json
              run load_cold_1 90 python3 bench/load_probe.py engines/gpt2 --out "$OUT/load_cold_1.json"
              run load_cold_2 90 python3 bench/load_probe.py engines/gpt2 --out "$OUT/load_cold_2.json"
              run load_cold_7 90 python3 bench/load_probe.py engines/gpt2 --prompt-len 7 --out "$OUT/load_cold_7.json" ;;
    verify) run verify_eager 240 python3 -m dynashape verify engines/gpt2 --json ;;
    bench) run bench_gpt2 300 $BENCH --target engines/gpt2 --budget-s ${BENCH_S:-100} ${BENCH_ARGS:-} \
             --out "$OUT/generate_gpt2_fp16" ;;
    ab) # the previous session's engine (.baseline2/src: git archive of 11c9def) against this one, same machine;
        # and this one without the fused prefill (PyTorch-op prefill, the staging of the host path kept)
        run compile_base 150 env PYTHONPATH=.baseline2/src python3 -m dynashape compile random:gpt2 --seq 1:1024 \
          --batch 1:64 --device cuda --dtype float16 -o engines/gpt2-base --force --json
        run ab_base 200 env PYTHONPATH=.baseline2/src $BENCH --target engines/gpt2-base --systems dynashape \
          --batches 1,64 --prompt-lens 7,512 --new-tokens 128 --out "$OUT/ab_base"
        run ab_new 200 $BENCH --target engines/gpt2 --systems dynashape --batches 1,64 --prompt-lens 7,512 \
          --new-tokens 128 --out "$OUT/ab_new"
        [ -n "${AB_TPREFILL:-}" ] || continue
        run compile_tprefill 150 python3 -m dynashape compile random:gpt2 --seq 1:1024 --batch 1:64 --device cuda \
          --dtype float16 --no-fused-prefill -o engines/gpt2-tprefill --force --json
        run ab_tprefill 200 $BENCH --target engines/gpt2-tprefill --systems dynashape --batches 1,64 \
          --prompt-lens 7,512 --new-tokens 128 --out "$OUT/ab_tprefill" ;;
    ttft) # where the time to first token goes (host, prefill graph), fused prefill and PyTorch-op prefill
          run compile_tprefill 150 python3 -m dynashape compile random:gpt2 --seq 1:1024 --batch 1:64 --device cuda \
            --dtype float16 --no-fused-prefill -o engines/gpt2-tprefill --force
          run ttft_fused 120 python3 bench/ttft_probe.py engines/gpt2 --prompt-lens 7,64,128,512 --out "$OUT/ttft_fused.json"
          run ttft_torch 120 python3 bench/ttft_probe.py engines/gpt2-tprefill --prompt-lens 7,64,128,512 \
            --out "$OUT/ttft_torch.json" ;;
    ncu) # one greedy decode step under Nsight Compute, per kernel (Firecracker machines: counters readable)
         M=gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
         M=$M,launch__registers_per_thread,launch__occupancy_limit_registers,launch__waves_per_multiprocessor
         M=$M,sm__warps_active.avg.pct_of_peak_sustained_active,launch__grid_size,launch__block_size
         for c in "gpt2 1" "gpt2 64" "gpt2-xl 1"; do
           n=${c// /_}; cmd="ncu --clock-control none --profile-from-start off --csv --metrics $M python3 bench/ncu_step.py $c"
           run ncu_$n 200 bash -c "$cmd > /tmp/ncu_$n.csv"
           run ncu_summary_$n 30 python3 bench/ncu_summary.py /tmp/ncu_$n.csv "$OUT/ncu_$n.json" --command "$cmd"
         done ;;
    gemm) run gemm 200 python3 bench/gemm_probe.py --out "$OUT/gemm_probe.json" ;;
    decode_ab) run decode_ab ${AB_S:-400} python3 bench/decode_ab.py --out "$OUT/decode_ab.json" \
                 --budget-s $(( ${AB_S:-400} - 70 )) ${AB_ARGS:-} ;;
    inductor) run compile_inductor 200 python3 -m dynashape compile random:gpt2 --seq 1:1024 --batch 1:64 --device cuda \
                --dtype float16 --backend inductor -o engines/gpt2-inductor --force --json
              run load_inductor 90 python3 bench/load_probe.py engines/gpt2-inductor --out "$OUT/load_inductor.json"
              run bench_inductor 120 $BENCH --target engines/gpt2-inductor --systems dynashape --batches 1,64 \
                --prompt-lens 512 --new-tokens 128 --repeats 2 --out "$OUT/generate_gpt2_inductor" ;;
    xl) run compile_xl 200 python3 -m dynashape compile random:gpt2-xl --seq 1:1024 --batch 1:8 --device cuda \
          --dtype float16 -o engines/gpt2-xl --force --json
        run load_xl 90 python3 bench/load_probe.py engines/gpt2-xl --out "$OUT/load_xl.json"
        run bench_xl 120 $BENCH --target engines/gpt2-xl --systems dynashape --batches 1,8 --prompt-lens 512 \
          --new-tokens 128 --repeats 2 --out "$OUT/generate_gpt2xl_fp16" ;;
    ab1) run ab_baseline 300 env PYTHONPATH=.baseline/src $BENCH --model random:gpt2 --systems dynashape \
          --batches 1,64 --prompt-lens 512 --new-tokens 128 --out "$OUT/ab_baseline_fastgen" ;;
    profile) run profile_1 200 $BENCH --target engines/gpt2 --profile 1,512 --new-tokens 64 --out "$OUT/gpt2_b1"
             [ -n "${PROFILE_64:-}" ] && run profile_64 200 $BENCH --target engines/gpt2 --profile 64,512 \
               --new-tokens 64 --out "$OUT/gpt2_b64" ;;
    aoti) run compile_aoti 400 python3 -m dynashape compile random:gpt2 --seq 1:1024 --batch 1:8 --device cuda \
            --dtype float16 --backend aoti -o engines/gpt2-aoti --force ;;
    probe) run probe_load 450 python3 bench/gpu_probe_load.py --out "$OUT" --device cuda ;;
    serve) # fastapi/uvicorn are not in the image: carried as wheels (.whl), installed beside, for this stage only
           python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
             .whl/*.whl > "$OUT/pip_serve.log" 2>&1
           run serve_bench 200 env PYTHONPATH=/tmp/site:src python3 bench/serve_bench.py engines/gpt2 --clients 64 \
             --prompt-lens 8:512 --max-tokens 128 --duration 30 --procs 4 --out "$OUT/serve_gpt2_fp16.json" ;;
    *) echo "unknown stage $stage" ;;
  esac
done
cat "$OUT/stages.txt"
# at most 8 files come back: the logs travel as one archive, the results (but the headline) as another
(cd "$OUT" && tar czf logs.tgz *.log stages.txt && rm -f *.log stages.txt)
(cd "$OUT" && ls *.json *.png *.txt 2>/dev/null | grep -v '^generate_gpt2_fp16\.' > keep.txt; \
  [ -s keep.txt ] && tar czf results.tgz -T keep.txt && rm -f $(cat keep.txt); rm -f keep.txt)
