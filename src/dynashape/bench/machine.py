"""Machine facts and the one timer every benchmark uses.

``Timer`` brackets device work with CUDA events on a GPU (the host clock on a CPU); ``copy_gbps`` is
the ceiling a memory-bound step is measured against: a device-to-device copy, counting bytes read
plus bytes written, measured in the same run as the numbers it judges.
"""
from __future__ import annotations

import os
import platform
import time

import torch


class Timer:
    """``t = Timer(device); ...; ms = t.stop()``: CUDA events on a GPU, the host clock otherwise."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        if self.cuda:
            self.a, self.b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.a.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> float:
        if not self.cuda:
            return (time.perf_counter() - self.t0) * 1e3
        self.b.record()
        self.b.synchronize()
        return self.a.elapsed_time(self.b)


def copy_gbps(device) -> float:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    device = torch.device(device)
    n = (1 << 30) if device.type == "cuda" else (1 << 26)
    src = torch.empty(n, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    reps = 20 if device.type == "cuda" else 5
    t = Timer(device)
    for _ in range(reps):
        dst.copy_(src)
    ms = t.stop()
    del src, dst
    return 2 * n * reps / (ms / 1e3) / 1e9


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # not installed (or blocked): recorded as None
        return None


def machine_facts(device, dtype: str, bandwidth: bool = False) -> dict:
    device = torch.device(device)
    facts = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
             "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
             "device": str(device), "dtype": dtype, "python": platform.python_version(),
             "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": version("transformers"),
             "triton": version("triton"), "onnxruntime": version("onnxruntime"),
             "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    if bandwidth:
        facts["copy_gbps"] = round(copy_gbps(device), 1)
    return facts
