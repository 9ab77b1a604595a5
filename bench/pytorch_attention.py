#!/usr/bin/python3
"""The PyTorch side of bench/compare_attention.py: the attention core as PyTorch users
write it on CPU (q @ k^T * scale -> softmax -> @ v, autograd for backward), on the same
shapes as bench/attention_bench.cpp. One shape per process, so the peak-memory figure
is this shape's alone. Prints one JSON line:
  {"heads":..., "T":..., "D":..., "backward":..., "ms": median, "extra_bytes": peak RSS growth}
"""
import argparse
import json
import os
import resource
import time

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, required=True)
parser.add_argument("--heads", type=int, required=True)
parser.add_argument("--tokens", type=int, required=True)
parser.add_argument("--dim", type=int, required=True)
parser.add_argument("--backward", action="store_true")
parser.add_argument("--repeats", type=int, default=10)
args = parser.parse_args()
os.environ["OMP_NUM_THREADS"] = str(args.threads)

import torch  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)
shape = (args.heads, args.tokens, args.dim)
q = torch.randn(shape, requires_grad=args.backward)
k = torch.randn(shape, requires_grad=args.backward)
v = torch.randn(shape, requires_grad=args.backward)
o_grad = torch.randn(shape)
scale = args.dim ** -0.5


def step():
    o = torch.softmax((q @ k.transpose(1, 2)) * scale, dim=-1) @ v
    if args.backward:
        q.grad = k.grad = v.grad = None
        o.backward(o_grad)
    return o


baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with torch.inference_mode(not args.backward):
    step()  # warm-up: allocator pools, thread pool
times = []
for _ in range(args.repeats):
    start = time.perf_counter()
    with torch.inference_mode(not args.backward):
        step()
    times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
times.sort()
# Peak resident memory above the inputs: the T x T scores, probabilities and their grads.
print(json.dumps({"heads": args.heads, "T": args.tokens, "D": args.dim, "backward": args.backward,
                  "ms": 1e3 * times[len(times) // 2], "extra_bytes": peak - baseline,
                  "score_matrix_bytes": 4 * args.heads * args.tokens * args.tokens,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
