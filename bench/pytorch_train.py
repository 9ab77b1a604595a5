#!/usr/bin/python3
"""The PyTorch side of the seed-CNN training comparison (bench/compare_train.sh).

Same model, loss, optimizer (Adam, lr 1e-3) and the same real Fashion-MNIST batches ember
uses in `ember bench --data fashion-mnist` (the first batches of the training set, in file
order, /255). Prints one JSON line like ember's:
  {"framework": "pytorch", "threads": N, "batch": B, "img_per_s": ..., "blas": ..., "allocator": ...}
Run it with Debian's torch at its best: OpenBLAS installed (libopenblas0-openmp) and
jemalloc preloaded (LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2).
"""
import argparse
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, required=True)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--steps", type=int, default=50)
parser.add_argument("--warmup", type=int, default=5)
parser.add_argument("--inference", action="store_true")
args = parser.parse_args()
os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch starts its pools

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pytorch"))
from ember_models import FASHION_MNIST as DATA, SeedCnn, read_idx  # noqa: E402

torch.set_num_threads(args.threads)


def loaded_libraries():
    with open("/proc/self/maps") as maps:
        return maps.read()


def main():
    b = args.batch_size
    count = args.warmup + args.steps
    images = read_idx(os.path.join(DATA, "train-images-idx3-ubyte.gz"))[: count * b]
    labels = read_idx(os.path.join(DATA, "train-labels-idx1-ubyte.gz"))[: count * b]
    batches = [(torch.from_numpy(images[i * b:(i + 1) * b].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28),
                torch.from_numpy(labels[i * b:(i + 1) * b].astype(np.int64))) for i in range(count)]
    torch.manual_seed(0)
    model = SeedCnn()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x, y):
        if args.inference:
            with torch.no_grad():
                model(x)
            return
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()

    for x, y in batches[: args.warmup]:
        step(x, y)
    start = time.perf_counter()
    for x, y in batches[args.warmup:]:
        step(x, y)
    seconds = time.perf_counter() - start
    maps = loaded_libraries()
    blas = "openblas" if "libopenblas" in maps else ("netlib blas (slow)" if "libblas" in maps else "unknown")
    allocator = "jemalloc" if "libjemalloc" in maps else "glibc malloc"
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "mode": "inference" if args.inference else "training",
                      "threads": torch.get_num_threads(), "batch": b, "steps": args.steps,
                      "img_per_s": round(args.steps * b / seconds, 2), "ms_per_step": round(1000 * seconds / args.steps, 4),
                      "blas": blas, "allocator": allocator}))


if __name__ == "__main__":
    sys.exit(main())
