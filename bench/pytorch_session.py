#!/usr/bin/python3
"""Inference under concurrent callers, the PyTorch side of bench/compare_session.py.

Like ember's InferenceSession benchmark (bench/session_bench.cpp): one model shared by
`callers` Python threads, each calling model(x) under torch.no_grad() on its own batch
for `seconds`, each call on one intra-op thread (OMP_NUM_THREADS=1, set_num_threads(1)),
as every session call runs on its caller's thread. The kernels release the GIL; the
Python between them does not, which is part of what a Python server pays. Prints one
JSON line:
  {"framework": "pytorch", "model": M, "batch": B, "callers": N, "latency_ms": ..., "images_per_second": ...}
latency_ms is the mean wall time of one call (averaged over callers); images_per_second
is all callers' images over the wall time. Run with jemalloc preloaded, like the others.
"""
import argparse
import json
import os
import sys
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="seed-cnn")
parser.add_argument("--batch-size", type=int, default=1)
parser.add_argument("--callers", type=int, default=1)
parser.add_argument("--seconds", type=float, default=2.0)
args = parser.parse_args()
os.environ["OMP_NUM_THREADS"] = "1"  # before torch starts its pools; every thread inherits it

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pytorch"))
from ember_models import BUILTIN_MODELS, runtime_libraries  # noqa: E402

torch.set_num_threads(1)


def main():
    torch.manual_seed(0)
    model = BUILTIN_MODELS[args.model][0]().eval()
    inputs = [torch.rand(args.batch_size, 1, 28, 28) for _ in range(args.callers)]
    with torch.no_grad():
        for x in inputs:
            model(x)  # warm-up
    calls = [0] * args.callers
    busy = [0.0] * args.callers
    start_line = threading.Barrier(args.callers + 1)

    def caller(index):
        x = inputs[index]
        start_line.wait()
        deadline = time.perf_counter() + args.seconds
        with torch.no_grad():
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                model(x)
                busy[index] += time.perf_counter() - t
                calls[index] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(args.callers)]
    for t in threads:
        t.start()
    start_line.wait()
    begin = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    latency = sum(1e3 * b / c for b, c in zip(busy, calls)) / args.callers
    blas, allocator = runtime_libraries()
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "model": args.model, "batch": args.batch_size,
                      "callers": args.callers, "latency_ms": round(latency, 4),
                      "images_per_second": round(sum(calls) * args.batch_size / wall, 1), "blas": blas,
                      "allocator": allocator}))


if __name__ == "__main__":
    sys.exit(main())
