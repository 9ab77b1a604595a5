#!/usr/bin/python3
"""Attention core, ember's fused kernel vs PyTorch's q@k^T -> softmax -> @v, side by side.

  bench/compare_attention.py [--threads 2] [--rounds 3]

For each shape (B*H heads, T, D) and pass (forward, forward+backward) it runs ember's
bench binary and the PyTorch script alternately, `rounds` times, and prints a markdown
table of medians, the ember/PyTorch speed ratio and each side's extra memory. PyTorch runs
with jemalloc preloaded; ember's figure is its scratch plus the log-sum-exp, PyTorch's is
its peak resident memory above the inputs.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--bench", default=os.path.join(root, "build", "release", "ember_bench"))
args = parser.parse_args()
jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
for path in (args.bench, jemalloc):
    if not os.path.exists(path):
        sys.exit(f"compare_attention: {path} is missing (run tools/setup.sh --with-pytorch)")

shapes = [(64, 128, 64), (64, 512, 64), (64, 2048, 64), (64, 128, 32), (64, 512, 32)]


def ember(name, heads, tokens, dim):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run([args.bench, f"--benchmark_filter=^{name}/heads:{heads}/T:{tokens}/D:{dim}/",
                          "--benchmark_format=json", "--benchmark_min_time=0.5"],
                         env=env, check=True, capture_output=True, text=True).stdout
    run = json.loads(out)["benchmarks"][0]
    return run["real_time"], run["extra_bytes"]


def torch(heads, tokens, dim, backward):
    env = dict(os.environ, LD_PRELOAD=jemalloc)
    command = ["/usr/bin/python3", os.path.join(root, "bench", "pytorch_attention.py"), "--threads", str(args.threads),
               "--heads", str(heads), "--tokens", str(tokens), "--dim", str(dim)] + (["--backward"] if backward else [])
    line = json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)
    return line["ms"], line["extra_bytes"]


def mib(x):
    return f"{x / 2**20:.1f} MiB"


print(f"| pass | heads x T x D | ember ms | PyTorch ms | speed-up | ember extra | PyTorch extra |")
print("|---|---|---:|---:|---:|---:|---:|")
for backward in (False, True):
    name = "attention_forward_backward" if backward else "attention_forward"
    for heads, tokens, dim in shapes:
        e, t = [], []
        for _ in range(args.rounds):
            e.append(ember(name, heads, tokens, dim))
            t.append(torch(heads, tokens, dim, backward))
        e_ms, t_ms = statistics.median(x[0] for x in e), statistics.median(x[0] for x in t)
        print(f"| {'fwd+bwd' if backward else 'fwd'} | {heads} x {tokens} x {dim} | {e_ms:.2f} | {t_ms:.2f} | "
              f"{t_ms / e_ms:.2f}x | {mib(e[0][1])} | {mib(max(x[1] for x in t))} |", flush=True)
print(f"\n{args.threads} thread(s); PyTorch with jemalloc preloaded")
