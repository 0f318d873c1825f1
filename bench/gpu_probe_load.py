#!/usr/bin/env python3
"""Probe (torch + stdlib only): build a GPT-2-like decode step once, load it in a fresh process.
(1) torch.compile(...).aot_compile -> save_compiled_function -> load_compiled_function, cold/warm caches;
(2) AOTInductor package -> aoti_load_package (SIGSEGV on torch 2.11+cu130) and bisecting loaders, a native
backtrace (LD_PRELOAD'ed SIGSEGV handler) and gdb/cuda-gdb when present. Each step is a subprocess with a
timeout; crashes and hangs are recorded. Writes $OUT/probe_load.json and $OUT/<step>.log, prints a table.
Usage: python3 bench/gpu_probe_load.py --out $OUT [--device cuda|cpu] [--quick] [--deadline 470]
"""
import argparse, json, os, re, shutil, signal, subprocess, sys, time, zipfile

import torch
import torch.nn as nn
import torch.nn.functional as F

FULL = dict(n_layer=4, n_embd=768, n_head=12, vocab=50304, n_slots=64, L=512, batch=4)
QUICK = dict(n_layer=2, n_embd=64, n_head=4, vocab=512, n_slots=8, L=16, batch=2)


class Block(nn.Module):
    def __init__(self, E):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(E), nn.LayerNorm(E)
        self.qkv, self.proj = nn.Linear(E, 3 * E), nn.Linear(E, E)
        self.fc, self.fc2 = nn.Linear(E, 4 * E), nn.Linear(4 * E, E)


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.H, self.E = c["n_head"], c["n_embd"]
        self.wte, self.wpe = nn.Embedding(c["vocab"], self.E), nn.Embedding(c["L"], self.E)
        self.h = nn.ModuleList(Block(self.E) for _ in range(c["n_layer"]))
        self.ln_f = nn.LayerNorm(self.E)

    def decode(self, tok, pos, slots, kc, vc):
        """One token per row; kc/vc: (n_layer, n_slots, H, L, D), written in place at (slot, pos)."""
        B, H, D = tok.shape[0], self.H, self.E // self.H
        x = self.wte(tok) + self.wpe(pos)
        mask = torch.arange(kc.shape[3], device=tok.device)[None, :] <= pos[:, None]
        for i, blk in enumerate(self.h):
            q, k, v = blk.qkv(blk.ln1(x)).view(B, 3, H, D).unbind(1)
            kc[i, slots, :, pos] = k
            vc[i, slots, :, pos] = v
            att = torch.einsum("bhd,bhld->bhl", q, kc[i, slots]) * D ** -0.5
            att = att.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
            x = x + blk.proj(torch.einsum("bhl,bhld->bhd", att, vc[i, slots]).reshape(B, self.E))
            x = x + blk.fc2(F.gelu(blk.fc(blk.ln2(x)), approximate="tanh"))
        return F.linear(self.ln_f(x), self.wte.weight)


class Step(nn.Module):  # the export/AOTI entry point; caches are user inputs mutated in place
    def __init__(self, m):
        super().__init__()
        self.model = m

    def forward(self, tok, pos, slots, kc, vc):
        return self.model.decode(tok, pos, slots, kc, vc)


def step(model, tok, pos, slots, kc, vc):  # the aot_compile entry point (model is an argument)
    return model.decode(tok, pos, slots, kc, vc)


# ---------------------------------------------------------------- child side
def setup(a):
    c = QUICK if a.quick else FULL
    dev = torch.device(a.device)
    dt = torch.float16 if dev.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = GPT(c).to(dev, dt).eval().requires_grad_(False)
    return c, dev, dt, model


def inputs(c, dev, dt, B, seed):
    g = torch.Generator().manual_seed(seed)
    D = c["n_embd"] // c["n_head"]
    shape = (c["n_layer"], c["n_slots"], c["n_head"], c["L"], D)
    kc, vc = (torch.randn(shape, generator=g).mul_(0.5).to(dev, dt) for _ in range(2))
    tok = torch.randint(c["vocab"], (B,), generator=g).to(dev)
    pos = torch.randint(1, c["L"], (B,), generator=g).to(dev)
    slots = torch.randperm(c["n_slots"], generator=g)[:B].to(dev)
    return [tok, pos, slots, kc, vc]


def ppid(pid):
    try:
        return int(open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()[1])
    except Exception:  # noqa: BLE001
        return -1


def sync(dev):
    torch.cuda.synchronize() if dev.type == "cuda" else None


def check(fn, model, c, dev, dt, B, seed, timed=False):
    """fn(*inputs) against eager on clones: logits, both caches (calls are idempotent), extra memory of a call."""
    args = inputs(c, dev, dt, B, seed)
    ref_args, ptr, cache_bytes = [t.clone() for t in args], args[3].data_ptr(), args[3].numel() * args[3].element_size()
    sync(dev); t0 = time.perf_counter(); out = fn(*args); sync(dev)
    r = {"call_s": round(time.perf_counter() - t0, 4)}
    if dev.type == "cuda":  # second call: the first may autotune (Triton clones mutated args while benchmarking)
        torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated(); out = fn(*args); sync(dev)
        peak = torch.cuda.max_memory_allocated() - base
        r.update(peak_extra_MB=round(peak / 2**20, 1), cache_MB=round(cache_bytes / 2**20, 1),
                 peak_suggests_full_cache_copy=peak >= 0.9 * cache_bytes)
    out = out[0] if isinstance(out, (list, tuple)) else out
    with torch.no_grad():
        ref = model.decode(*ref_args)
    tol = 2e-2 if dt == torch.float16 else 1e-4
    err = ((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-6)).item()
    r.update(rel_err=err, logits_ok=err < tol, same_ptr=args[3].data_ptr() == ptr,
             caches_ok=all(torch.allclose(a.float(), b.float(), atol=tol, rtol=tol) for a, b in zip(args[3:], ref_args[3:])))
    r["ok"] = bool(r["logits_ok"] and r["caches_ok"] and r["same_ptr"])
    if timed:
        [fn(*args) for _ in range(3)]; sync(dev); t0 = time.perf_counter()
        [fn(*args) for _ in range(20)]; sync(dev); r["steady_ms"] = round((time.perf_counter() - t0) / 20 * 1e3, 3)
    return r


def copy_report(code, c):
    """Lines of generated code that copy or allocate something of the cache's full shape."""
    D = c["n_embd"] // c["n_head"]
    dims = [c["n_layer"], c["n_slots"], c["n_head"], c["L"], D]
    shape_re = re.compile(r"\b" + r"L?,\s*".join(map(str, dims)) + r"L?\b")
    numel = str(c["n_layer"] * c["n_slots"] * c["n_head"] * c["L"] * D)
    lines = [ln.strip() for ln in code.splitlines()]
    hits = [ln for ln in lines if shape_re.search(ln) or re.search(r"\b%sL?\b" % numel, ln)]
    copies = [ln for ln in lines if re.search(r"copy_|aoti_torch_copy", ln)]
    return {"cache_shape_lines": hits[:12], "n_cache_shape_lines": len(hits),
            "copy_lines": copies[:12], "n_copy_lines": len(copies)}


def child(a):
    if os.environ.get("PROBE_FAKE_SEGV") == a.child:  # tests the crash bookkeeping off the GPU
        import ctypes; ctypes.string_at(0)
    t_imp = time.perf_counter() - float(os.environ.get("PROBE_T0", time.perf_counter()))
    c, dev, dt, model = setup(a)
    W, res = a.work, {"import_torch_s": round(t_imp, 2)}
    pt2 = os.path.join(W, "aoti.pt2" if a.child != "aoti_noconst_load" else "aoti_noconst.pt2")
    if a.child == "env":
        from torch.utils import cpp_extension
        from torch._inductor import config as ic
        import platform, torch._dynamo.package as pk
        ch = cpp_extension.CUDA_HOME
        cuda_h = os.path.join(ch or "/nonexistent", "include", "cuda.h")
        m = re.search(r"#define CUDA_VERSION (\d+)", open(cuda_h).read()) if os.path.exists(cuda_h) else None
        nv = os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "include")
        res.update(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
                   gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                   cpp_extension_CUDA_HOME=ch, cuda_h_CUDA_VERSION=m and m.group(1),
                   pip_nvidia_cu13_include=os.path.exists(nv) and sorted(os.listdir(nv))[:15],
                   system_info=str(pk.SystemInfo.current()), glibc=platform.libc_ver(),
                   inductor={k: getattr(ic, k, None) for k in ("bundle_triton_into_fx_graph_cache", "fx_graph_cache",
                             "autotune_local_cache", "use_static_cuda_launcher", "compile_threads", "force_disable_caches")},
                   aoti={k: getattr(ic.aot_inductor, k, None) for k in ("precompile_headers", "package_constants_in_so",
                         "embed_kernel_binary", "link_libtorch", "use_consts_asm_build")})
    elif a.child == "pc_build":
        from torch._inductor.utils import run_and_get_code
        args = inputs(c, dev, dt, c["batch"], 1)
        for t in args[:3]:
            torch._dynamo.mark_dynamic(t, 0)
        torch._dynamo.config.enable_aot_compile = True  # torch 2.11: default False, .aot_compile is absent without it
        cfn = torch.compile(step, fullgraph=True)
        t0 = time.perf_counter()
        aot, codes = run_and_get_code(cfn.aot_compile, ((model, *args), {}))
        res["aot_compile_s"] = round(time.perf_counter() - t0, 2)
        aot.save_compiled_function(os.path.join(W, "pc.bin"))
        res["artifact_MB"] = round(os.path.getsize(os.path.join(W, "pc.bin")) / 2**20, 2)
        open(os.path.join(W, "pc_output_code.py"), "w").write("\n\n".join(codes))
        res["generated_code"] = copy_report("\n".join(codes), c)
        res["check_in_build_process"] = check(lambda *x: aot(model, *x), model, c, dev, dt, c["batch"], 2)
    elif a.child in ("pc_load_cold", "pc_load_warm"):
        from torch._dynamo.utils import counters
        t0 = time.perf_counter()
        with open(os.path.join(W, "pc.bin"), "rb") as f:
            fn = torch.compiler.load_compiled_function(f)
        res["load_s"] = round(time.perf_counter() - t0, 3)
        res["first_call"] = check(lambda *x: fn(model, *x), model, c, dev, dt, c["batch"], 3, timed=True)
        res["other_batch"] = check(lambda *x: fn(model, *x), model, c, dev, dt, min(c["batch"] + 3, c["n_slots"]), 4)
        fn.disable_guard_check()
        res["no_guard_check"] = check(lambda *x: fn(model, *x), model, c, dev, dt, c["batch"], 5, timed=True)
        res["counters"] = {k: dict(v) for k, v in counters.items() if k in ("inductor", "aot_autograd", "stats")}
        res["child_processes"] = sum(1 for q in os.listdir("/proc") if q.isdigit() and ppid(q) == os.getpid())  # worker pool?
        res["triton_cache_files"] = sum(len(f) for _, _, f in os.walk(os.environ.get("TRITON_CACHE_DIR", "/nonexistent")))
    elif a.child in ("aoti_build", "aoti_noconst_build"):
        args = inputs(c, dev, dt, c["batch"], 1)
        b = torch.export.Dim("batch", min=1, max=c["n_slots"])
        t0 = time.perf_counter()
        ep = torch.export.export(Step(model), tuple(args), dynamic_shapes=({0: b}, {0: b}, {0: b}, None, None))
        res["export_s"] = round(time.perf_counter() - t0, 2)
        opts = {"aot_inductor.package_constants_in_so": False} if a.child == "aoti_noconst_build" else {}
        t0 = time.perf_counter()
        out = torch._inductor.aoti_compile_and_package(
            ep, package_path=os.path.join(W, "aoti.pt2" if not opts else "aoti_noconst.pt2"), inductor_configs=opts)
        res.update(compile_s=round(time.perf_counter() - t0, 2), package=out, package_MB=round(os.path.getsize(out) / 2**20, 1))
    elif a.child in ("aoti_meta",):
        res["metadata"] = torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(pt2, "model")
    elif a.child.startswith("aoti_"):
        if a.child == "aoti_pkg_cudainit" and dev.type == "cuda":
            torch.zeros(1, device=dev); torch.cuda.synchronize()
        t0 = time.perf_counter()
        if a.child in ("aoti_dlopen", "aoti_runner"):
            d = os.path.join(W, "x_" + a.child)
            zipfile.ZipFile(pt2).extractall(d)
            so = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs if f.endswith(".so")][0]
            if a.child == "aoti_dlopen":
                import ctypes
                ctypes.CDLL(so, mode=os.RTLD_NOW | os.RTLD_LOCAL)
                res.update(dlopen_ok=True, load_s=round(time.perf_counter() - t0, 3)); fn = None
            else:
                r = (torch._C._aoti.AOTIModelContainerRunnerCuda(so, 1, str(dev), os.path.dirname(so))
                     if dev.type == "cuda" else torch._C._aoti.AOTIModelContainerRunnerCpu(so, 1))
                fn = lambda *x: r.run(list(x))
        else:
            cm = torch._inductor.aoti_load_package(pt2, run_single_threaded=a.child == "aoti_pkg_single")
            if a.child == "aoti_noconst_load":
                sd = Step(model).state_dict()
                cm.load_constants({k: sd[k] for k in cm.get_constant_fqns()}, check_full_update=True)
            fn = cm
        if fn is not None:
            res["load_s"] = round(time.perf_counter() - t0, 3)
            res["first_call"] = check(fn, model, c, dev, dt, c["batch"], 3, timed=True)
            res["other_batch"] = check(fn, model, c, dev, dt, min(c["batch"] + 3, c["n_slots"]), 4)
    json.dump(res, open(os.path.join(W, a.child + ".json"), "w"), indent=1, default=str)


# ---------------------------------------------------------------- parent side
SEGV_C = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <execinfo.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
static void h(int s, siginfo_t *si, void *u) {
  void *b[48]; int n = backtrace(b, 48); Dl_info d; fprintf(stderr, "NATIVE-BT signal %d at %p\n", s, si->si_addr);
  for (int i = 0; i < n; i++) if (dladdr(b[i], &d) && d.dli_fname) fprintf(stderr, "NATIVE-BT #%d %s %s +0x%lx\n", i,
      d.dli_fname, d.dli_sname ? d.dli_sname : "?", (unsigned long)((char *)b[i] - (char *)(d.dli_sname ? d.dli_saddr : d.dli_fbase)));
  signal(s, SIG_DFL); raise(s); }
__attribute__((constructor)) static void init(void) { struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_sigaction = h;
  sa.sa_flags = SA_SIGINFO; sigaction(SIGSEGV, &sa, 0); sigaction(SIGBUS, &sa, 0); sigaction(SIGABRT, &sa, 0); }
"""


class Runner:
    def __init__(self, a):
        self.a, self.t_end, self.steps = a, time.time() + a.deadline, {}

    def run(self, name, timeout, env=None, child=None, wrap=()):
        left = self.t_end - time.time()
        if left < 20:
            self.steps[name] = {"status": "skipped: out of time"}; return self.steps[name]
        a, res_file = self.a, os.path.join(self.a.work, (child or name) + ".json")
        os.path.exists(res_file) and os.remove(res_file)
        cmd = [*wrap, sys.executable, os.path.abspath(__file__), "--child", child or name, "--work", a.work,
               "--device", a.device] + (["--quick"] if a.quick else [])
        e = dict(os.environ, PYTHONFAULTHANDLER="1", PYTHONUNBUFFERED="1", PROBE_T0=str(time.perf_counter()), **(env or {}))
        t0, log = time.perf_counter(), os.path.join(a.out, name + ".log")
        with open(log, "w") as lf:
            p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=e, start_new_session=True)
            try:
                rc = p.wait(timeout=min(timeout, left))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL); p.wait(); rc = "timeout"
        r, text = {"wall_s": round(time.perf_counter() - t0, 1), "rc": rc}, open(log, errors="replace").read()
        dbg = re.search(r"received signal (\w+)", text) if wrap else None
        r["status"] = ("ok" if rc == 0 and os.path.exists(res_file) else "hang/timeout" if rc == "timeout" else
                       signal.Signals(-rc).name if rc < 0 else dbg.group(1) + " (debugger)" if dbg else "failed rc=%s" % rc)
        if os.path.exists(res_file):
            r["result"] = json.load(open(res_file))
        if r["status"] != "ok":
            tail = text.splitlines()
            r["log_tail"] = [ln for ln in tail if re.match(r"NATIVE-BT|#\d+ |.*received signal", ln)][:50] + tail[-30:]
        self.steps[name] = r
        print("[probe] %-22s %-14s %6.1fs" % (name, r["status"], r["wall_s"]), flush=True)
        return r


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()[-4000:]
    except Exception as e:  # noqa: BLE001
        return repr(e)


def aoti_files(a, c, rep):
    """ldd/readelf/undefined CUDA symbols of the packaged .so and a copy report of its .cpp files."""
    pt2 = os.path.join(a.work, "aoti.pt2")
    if not os.path.exists(pt2):
        return
    d = os.path.join(a.work, "x_inspect")
    zipfile.ZipFile(pt2).extractall(d)
    files = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs]
    rep["aoti_package_files"] = sorted(os.path.relpath(f, d) for f in files)[:40]
    for so in [f for f in files if f.endswith(".so")][:1]:
        rep["aoti_so"] = {"MB": round(os.path.getsize(so) / 2**20, 1), "ldd": sh("ldd %s" % so),
                          "needed_rpath": sh("readelf -d %s | grep -E 'NEEDED|RPATH|RUNPATH'" % so),
                          "undefined_cuda": sh("nm -D --undefined-only %s | grep -iE ' (cu|cuda)[A-Z]' | head -40" % so)}
    code = "\n".join(open(f, errors="replace").read() for f in files if f.endswith((".cpp", ".h")))
    rep["aoti_generated_code"] = copy_report(code, c)


def parent(a):
    os.makedirs(a.out, exist_ok=True)
    a.work = a.work or os.path.join(a.out, "work")
    shutil.rmtree(a.work, ignore_errors=True); os.makedirs(a.work)
    c, R, W = (QUICK if a.quick else FULL), Runner(a), a.work
    cache = lambda tag: {"TORCHINDUCTOR_CACHE_DIR": os.path.join(W, "ind_" + tag), "TRITON_CACHE_DIR": os.path.join(W, "tri_" + tag)}
    rep = {"config": c, "device": a.device, "host": {"nvidia_smi": sh("nvidia-smi --query-gpu=name,driver_version --format=csv,noheader"),
           "nvcc": sh("nvcc --version | tail -2"), "gcc": sh("g++ --version | head -1"), "CUDA_HOME": os.environ.get("CUDA_HOME"),
           "gdb": shutil.which("gdb"), "cuda_gdb": shutil.which("cuda-gdb")}}
    R.run("env", 60)
    R.run("pc_build", 200, cache("build"))
    if R.steps["pc_build"]["status"] == "ok":
        R.run("pc_load_cold", 120, cache("load"))
        R.run("pc_load_warm", 90, cache("load"))
        R.run("pc_load_cold_1thread", 120, dict(cache("load1"), TORCHINDUCTOR_COMPILE_THREADS="1"), child="pc_load_cold")
    R.run("aoti_build", 240, cache("aoti"))
    aoti_files(a, c, rep)
    if R.steps["aoti_build"]["status"] == "ok":
        cold = cache("aoti_load")
        R.run("aoti_meta", 60, cold)
        R.run("aoti_pkg", 90, cold)
        R.run("aoti_dlopen", 60, cold)
        R.run("aoti_runner", 90, cold)
        crashed = R.steps["aoti_pkg"]["status"] != "ok"
        dbg = shutil.which("gdb") or shutil.which("cuda-gdb")
        if crashed and dbg:
            R.run("aoti_pkg_gdb", 120, cold, child="aoti_pkg", wrap=(dbg, "-q", "-batch", "-ex", "set pagination off",
                  "-ex", "handle SIGPIPE SIGUSR1 SIGUSR2 nostop noprint", "-ex", "run", "-ex", "bt 40",
                  "-ex", "info sharedlibrary", "--args"))
        cc = shutil.which("gcc") or shutil.which("cc")
        if crashed and cc:
            src, lib = os.path.join(W, "segv.c"), os.path.join(W, "libsegvbt.so")
            open(src, "w").write(SEGV_C)
            rep["segv_handler_build"] = sh("%s -shared -fPIC -O0 -o %s %s -ldl 2>&1" % (cc, lib, src))
            if os.path.exists(lib):
                R.run("aoti_pkg_native_bt", 90, dict(cold, LD_PRELOAD=lib), child="aoti_pkg")
                bt = [ln.split(" ", 2)[-1] for ln in R.steps["aoti_pkg_native_bt"].get("log_tail", []) if "NATIVE-BT" in ln]
                bt = bt[1:bt.index(bt[0], 1)] if bt.count(bt[0]) > 1 else bt[1:]
                if bt and shutil.which("c++filt"):
                    rep["native_bt_demangled"] = subprocess.run(["c++filt"], input="\n".join(bt), capture_output=True, text=True).stdout.splitlines()
        R.run("aoti_pkg_single", 90, cold)
        R.run("aoti_pkg_cudainit", 90, cold)
        if R.t_end - time.time() > 130:  # constants out of the .so: is constant loading the crash site?
            R.run("aoti_noconst_build", 200, cache("aoti"))
            if R.steps["aoti_noconst_build"]["status"] == "ok":
                R.run("aoti_noconst_load", 90, cold)
    rep["steps"] = R.steps
    json.dump(rep, open(os.path.join(a.out, "probe_load.json"), "w"), indent=1, default=str)
    print("\n%-22s %-14s %7s %8s %9s %9s %6s  %s" % ("step", "status", "wall_s", "load_s", "1st_call", "steady_ms", "ok", "note"))
    for k, r in R.steps.items():
        res = r.get("result", {}); fc = res.get("first_call", {})
        note = {"pc_build": "compile %ss, %s copy lines, %s cache-shape lines" % (res.get("aot_compile_s"),
                res.get("generated_code", {}).get("n_copy_lines"), res.get("generated_code", {}).get("n_cache_shape_lines")),
                "aoti_build": "export %ss compile %ss" % (res.get("export_s"), res.get("compile_s"))}.get(k, "")
        note += " FULL CACHE COPY? (peak %s MB)" % fc.get("peak_extra_MB") if fc.get("peak_suggests_full_cache_copy") else ""
        note += " other-batch ok=%s" % res["other_batch"].get("ok") if "other_batch" in res else ""
        note += " no-guard steady %s ms" % res["no_guard_check"].get("steady_ms") if "no_guard_check" in res else ""
        print("%-22s %-14s %7s %8s %9s %9s %6s  %s" % (k, r["status"][:14], r.get("wall_s"), res.get("load_s", ""),
              fc.get("call_s", ""), fc.get("steady_ms", ""), fc.get("ok", ""), note))
    print("\nwrote", os.path.join(a.out, "probe_load.json"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/probe_load"); ap.add_argument("--work"); ap.add_argument("--child")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CPU dry run)")
    ap.add_argument("--deadline", type=float, default=470.0, help="seconds for all steps together")
    a = ap.parse_args()
    child(a) if a.child else parent(a)
