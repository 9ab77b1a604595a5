#!/usr/bin/python3
"""Inference session latency and throughput, ember vs PyTorch, side by side.

  bench/compare_session.py [--seconds 2] [--build build/release]

For seed-cnn and attn-cnn, batch 1 (latency) and batch 64 (throughput), with 1, 2 and 4
concurrent callers of one shared model: ember's InferenceSession (bench/session_bench.cpp,
Google Benchmark threads) and PyTorch under torch.no_grad() (bench/pytorch_session.py,
Python threads, jemalloc preloaded). Every call runs on its caller's thread on both sides.
Prints a markdown table with the ember / PyTorch throughput ratio (above 1: ember faster).
"""
import argparse
import json
import os
import re
import subprocess
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, default=2.0, help="per case and side")
parser.add_argument("--build", default=os.path.join(root, "build", "release"), help="build directory with ember_bench")
args = parser.parse_args()
bench = os.path.join(args.build, "ember_bench")
jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
for path in (bench, jemalloc):
    if not os.path.exists(path):
        sys.exit(f"compare_session: {path} is missing (run tools/setup.sh --with-pytorch)")

# name like "seed_cnn_session/batch:64/real_time/threads:2"
out = subprocess.run([bench, "--benchmark_filter=_session/", "--benchmark_format=json",
                      f"--benchmark_min_time={args.seconds}"], check=True, capture_output=True, text=True).stdout
ember = {}
for run in json.loads(out)["benchmarks"]:
    m = re.match(r"(\w+)_session/batch:(\d+)/.*threads:(\d+)", run["name"])
    ember[(m.group(1).replace("_", "-"), int(m.group(2)), int(m.group(3)))] = run

print("| model | batch | callers | ember ms/call | PyTorch ms/call | ember img/s | PyTorch img/s | ember / PyTorch img/s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
line = {}
for (model, batch, callers), e in sorted(ember.items()):
    command = ["/usr/bin/python3", os.path.join(root, "bench", "pytorch_session.py"), "--model", model,
               "--batch-size", str(batch), "--callers", str(callers), "--seconds", str(args.seconds)]
    line = json.loads(subprocess.run(command, env=dict(os.environ, LD_PRELOAD=jemalloc), check=True,
                                     capture_output=True, text=True).stdout)
    print(f"| {model} | {batch} | {callers} | {e['latency_ms']:.3f} | {line['latency_ms']:.3f} | "
          f"{e['images_per_second']:.0f} | {line['images_per_second']:.0f} | "
          f"{e['images_per_second'] / line['images_per_second']:.2f} |", flush=True)
print(f"\n{os.cpu_count()} cores; PyTorch {line.get('torch')}, BLAS {line.get('blas')}, allocator {line.get('allocator')}")
