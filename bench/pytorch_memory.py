#!/usr/bin/python3
"""Peak memory of training, the PyTorch side of bench/compare_memory.sh.

Measured exactly as tests/memory/step_memory_probe.cpp measures ember: the synthetic batch
(uniform pixels, random labels) is made right after `import torch`; it is the caller's data
and sits below the baseline. Baseline: VmRSS right then, libraries loaded, no model built
(--warm: after one training step of a throwaway model on one sample per thread, then
gc and the allocator asked to give back what it freed). VmHWM is reset to the baseline
(/proc/self/clear_refs), then the model, Adam (lr 1e-3) and cross-entropy are made and
`steps` training steps run. Prints one JSON line:
  {"framework": "pytorch", "threads": T, "batch": B, "steps": S, "warm": false,
   "baseline_mib": ..., "peak_above_baseline_mib": ..., "blas": ..., "allocator": ...}
Run it with LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 and OpenBLAS installed.
"""
import argparse
import ctypes
import gc
import json
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, required=True)
parser.add_argument("--model", default="seed-cnn")
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--warm", action="store_true")
args = parser.parse_args()
os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch starts its pools

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pytorch"))
from ember_models import BUILTIN_MODELS, runtime_libraries  # noqa: E402

torch.set_num_threads(args.threads)


def status_bytes(name):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {name}")


def give_back_freed_memory():
    """jemalloc: purge every arena; glibc: malloc_trim (ember's probe calls malloc_trim)."""
    process = ctypes.CDLL(None)
    if hasattr(process, "mallctl"):
        process.mallctl(b"arena.4096.purge", None, None, None, ctypes.c_size_t(0))  # MALLCTL_ARENAS_ALL
    else:
        process.malloc_trim(0)


def train(model, x, y, steps):
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()


def main():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch_size, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (args.batch_size,), generator=generator)
    if args.warm:
        train(BUILTIN_MODELS[args.model][0](), x[: args.threads], y[: args.threads], 1)
        gc.collect()
    give_back_freed_memory()
    baseline = status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    torch.manual_seed(0)
    train(BUILTIN_MODELS[args.model][0](), x, y, args.steps)
    peak = status_bytes("VmHWM")
    blas, allocator = runtime_libraries()
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "model": args.model,
                      "threads": torch.get_num_threads(), "batch": args.batch_size, "steps": args.steps, "warm": args.warm,
                      "baseline_mib": round(baseline / 2**20, 2), "peak_above_baseline_mib": round((peak - baseline) / 2**20, 2),
                      "blas": blas, "allocator": allocator}))


if __name__ == "__main__":
    sys.exit(main())
