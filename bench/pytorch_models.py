#!/usr/bin/python3
"""The PyTorch side of bench/compare.sh: ember's built-in models (tests/pytorch/ember_models.py)
timed the way `ember bench` times them.

A training step is zero_grad, forward, the spec's loss (cross-entropy, or MSE for
attention-mse), backward and Adam (lr 1e-3); inference is model.eval() under
torch.no_grad(). Data as in `ember bench --data`: the first batches of Fashion-MNIST's
training set in file order, /255 (LeNet's zero-padded to 32x32), or for attention-mse the
attention-retrieval task (16 tokens of 8 N(0, 1) features; the target is features 1-4 of
the token whose feature 0 is largest) with ember's sample count. Batches are made before
the clock starts and reused in turn.

  pytorch_models.py --threads N --model M --batch-size B [--inference] [--steps S] [--warmup W]
      prints one JSON line like `ember bench --json`;
  pytorch_models.py --threads N --serve
      prints a JSON line describing the set-up (torch, threads, BLAS, allocator), then
      answers each request line {"model", "mode", "batch", "steps", "warmup"} with one
      JSON result line, so a driver can interleave runs without paying torch's start-up.

Run it with /usr/bin/python3 (Debian's torch), OpenBLAS installed and jemalloc preloaded
(LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2); the set-up line says what was used.
"""
import argparse
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, required=True)
parser.add_argument("--serve", action="store_true")
parser.add_argument("--model", default="seed-cnn")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--inference", action="store_true")
parser.add_argument("--steps", type=int, default=50)
parser.add_argument("--warmup", type=int, default=5)
args = parser.parse_args()
os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch starts its pools

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pytorch"))
from ember_models import BUILTIN_MODELS, FASHION_MNIST, read_idx  # noqa: E402

torch.set_num_threads(args.threads)
TRAINING_IMAGES = 60000


def libraries():
    """Paths of the shared libraries mapped into this process."""
    with open("/proc/self/maps") as maps:
        return sorted({line.split()[-1] for line in maps if ".so" in line})


def setup():
    """Which BLAS and allocator torch really runs with, from the mapped libraries."""
    mapped = libraries()
    openblas = [p for p in mapped if "openblas" in p]
    other_blas = [p for p in mapped if "libblas" in p and "openblas" not in p]
    if openblas:
        blas = "openblas-openmp" if any("openblas-openmp" in p for p in openblas) else "openblas"
    elif torch.backends.mkl.is_available():
        blas = "mkl"  # PyPI's wheels carry MKL inside libtorch
    elif other_blas:
        blas = "netlib"  # Debian's reference BLAS (libblas3): many times slower
    else:
        blas = "unknown"
    return {"framework": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "blas": blas, "blas_library": (openblas or other_blas or ["none"])[0],
            "allocator": "jemalloc" if any("libjemalloc" in p for p in mapped) else "glibc malloc",
            "onednn": torch.backends.mkldnn.is_available()}


_fashion_mnist = {}


def fashion_mnist():
    if not _fashion_mnist:
        _fashion_mnist["images"] = read_idx(os.path.join(FASHION_MNIST, "train-images-idx3-ubyte.gz"))
        _fashion_mnist["labels"] = read_idx(os.path.join(FASHION_MNIST, "train-labels-idx1-ubyte.gz"))
    return _fashion_mnist["images"], _fashion_mnist["labels"]


def batches(model, batch, count):
    """(input, target) pairs as `ember bench --data` makes them."""
    _, sample_shape, _ = BUILTIN_MODELS[model]
    if model == "attention-mse":
        samples = batch * min(count, 64)
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(samples, 16, 8, generator=generator)
        chosen = x[:, :, 0].argmax(dim=1)
        y = x[torch.arange(samples), chosen, 1:5].contiguous()
        return [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(samples // batch)]
    images, labels = fashion_mnist()
    pairs = []
    for i in range(min(count, TRAINING_IMAGES // batch)):
        x = torch.from_numpy(images[i * batch:(i + 1) * batch].astype(np.float32) / 255.0).reshape(batch, 1, 28, 28)
        if sample_shape[1] == 32:  # LeNet: 28x28 zero-padded to 32x32
            x = F.pad(x, (2, 2, 2, 2))
        pairs.append((x.contiguous(), torch.from_numpy(labels[i * batch:(i + 1) * batch].astype(np.int64))))
    return pairs


def measure(model_name, mode, batch, steps, warmup):
    make_model, _, make_loss = BUILTIN_MODELS[model_name]
    data = batches(model_name, batch, warmup + steps)
    torch.manual_seed(0)
    model = make_model()
    loss_fn = make_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    training = mode == "training"
    model.train(training)

    def step(i):
        x, y = data[i % len(data)]
        if training:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        else:
            with torch.no_grad():
                model(x)

    for i in range(warmup):
        step(i)
    step_seconds = []
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step_start = time.perf_counter()
        step(i)
        step_seconds.append(time.perf_counter() - step_start)
    seconds = time.perf_counter() - start
    result = {"framework": "pytorch", "model": model_name, "mode": mode, "threads": torch.get_num_threads(), "batch": batch,
              "steps": steps, "img_per_s": round(steps * batch / seconds, 2), "ms_per_step": round(1000 * seconds / steps, 4)}
    result.update(step_statistics(step_seconds, batch))
    return result


def step_statistics(step_seconds, batch):
    """The keys `ember bench --json` gives: median step, p10/p90 (numpy's linear quantiles) and
    spread = (p90 - p10) / median, which one slow step does not move as it moves the mean."""
    ms = sorted(1000 * s for s in step_seconds)

    def quantile(q):
        position = q * (len(ms) - 1)
        below = int(position)
        above = min(below + 1, len(ms) - 1)
        return ms[below] + (position - below) * (ms[above] - ms[below])

    median = quantile(0.5)
    return {"median_ms_per_step": round(median, 4), "median_img_per_s": round(batch * 1000 / median, 2),
            "p10_ms_per_step": round(quantile(0.1), 4), "p90_ms_per_step": round(quantile(0.9), 4),
            "min_ms_per_step": round(ms[0], 4), "max_ms_per_step": round(ms[-1], 4),
            "spread": round((quantile(0.9) - quantile(0.1)) / median, 4)}


def main():
    if not args.serve:
        result = measure(args.model, "inference" if args.inference else "training", args.batch_size, args.steps, args.warmup)
        result.update(setup())
        print(json.dumps(result))
        return 0
    print(json.dumps(setup()), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        print(json.dumps(measure(request["model"], request["mode"], request["batch"], request["steps"], request["warmup"])),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
