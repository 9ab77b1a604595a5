#!/usr/bin/python3
"""The README's resnet recipe run in PyTorch: what `ember train --model resnet --data
fashion-mnist` with the same flags does, using only what ember's trainer has.

Same model (tests/pytorch/ember_models.py ResNet, PyTorch's default initialization),
Fashion-MNIST normalized as ember's loader does ((x/255 - mean) / std, no augmentation),
reshuffled every epoch, the last batch partial; the optimizer over every parameter
(weight decay included on BatchNorm's and the head's, as ember applies it); the schedule
stepped once per epoch (ember's epoch-unit StepLR / CosineAnnealingLR with T_max =
epochs); cross-entropy with label smoothing. Prints one line per epoch (train loss and
accuracy, test loss and accuracy, seconds) and a final JSON line. The defaults are the
README's recipe:

  ember train --model resnet --data fashion-mnist --epochs 15 --batch-size 128 \\
    --optimizer sgd --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 \\
    --schedule cosine --label-smoothing 0.1 --mean 0.2860 --std 0.3530

  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp \\
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \\
  /usr/bin/python3 bench/pytorch_resnet_recipe.py --threads 1 [--blocks 3] [--epochs 15] ...
"""
import argparse
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--blocks", type=int, default=None, help="residual blocks per stage (default: the built-in's)")
parser.add_argument("--epochs", type=int, default=15)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd")
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--momentum", type=float, default=0.9)
parser.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True)
parser.add_argument("--weight-decay", type=float, default=5e-4)
parser.add_argument("--schedule", choices=["constant", "step", "cosine"], default="cosine")
parser.add_argument("--step-size", type=int, default=1)
parser.add_argument("--gamma", type=float, default=0.1)
parser.add_argument("--label-smoothing", type=float, default=0.1)
parser.add_argument("--mean", type=float, default=0.2860)  # Fashion-MNIST's pixel mean and standard deviation
parser.add_argument("--std", type=float, default=0.3530)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--train-limit", type=int, default=0)
parser.add_argument("--time-steps", type=int, default=0, help="only time this many training steps and exit")
args = parser.parse_args()
os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch starts its pools

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pytorch"))
from ember_models import RESNET_BLOCKS, ResNet, evaluate, fashion_mnist_split, runtime_libraries  # noqa: E402

torch.set_num_threads(args.threads)


def split(prefix):
    return fashion_mnist_split(prefix, args.mean, args.std, args.train_limit if prefix == "train" else 0)


def main():
    blocks = args.blocks or RESNET_BLOCKS
    train_x, train_y = split("train")
    test_x, test_y = split("t10k")
    torch.manual_seed(args.seed)
    model = ResNet(blocks)
    params = model.parameters()
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
                                    weight_decay=args.weight_decay)
    elif args.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    if args.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    elif args.schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.step_size, gamma=args.gamma)
    else:
        scheduler = None
    train_loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    test_loss_fn = nn.CrossEntropyLoss()
    blas, allocator = runtime_libraries()
    print(f"resnet blocks/stage {blocks} ({6 * blocks + 2} layers), {sum(p.numel() for p in model.parameters())} "
          f"parameters; torch {torch.__version__}, {torch.get_num_threads()} threads, {blas}, {allocator}; "
          f"{vars(args)}", flush=True)
    generator = torch.Generator().manual_seed(args.seed)
    b = args.batch_size
    if args.time_steps:
        order = torch.randperm(len(train_x), generator=generator)
        start = time.perf_counter()
        for i in range(args.time_steps):
            index = order[i * b:(i + 1) * b]
            optimizer.zero_grad()
            train_loss_fn(model(train_x[index]), train_y[index]).backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        print(json.dumps({"img_per_s": round(args.time_steps * b / seconds, 1),
                          "epoch_seconds_estimate": round(seconds / (args.time_steps * b) * len(train_x), 1)}))
        return 0
    history = []
    run_start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(len(train_x), generator=generator)
        total_loss = correct = 0.0
        for i in range(0, len(train_x), b):
            index = order[i:i + b]
            x, y = train_x[index], train_y[index]
            optimizer.zero_grad()
            out = model(x)
            loss = train_loss_fn(out, y)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
        train_seconds = time.perf_counter() - start
        if scheduler is not None:
            scheduler.step()
        test_loss, test_accuracy = evaluate(model, test_x, test_y, test_loss_fn, 500)
        seconds = time.perf_counter() - start
        history.append(round(100 * test_accuracy, 2))
        print(f"epoch {epoch}: train loss {total_loss / len(train_x):.4f} acc {100 * correct / len(train_x):.2f}% | "
              f"test loss {test_loss:.4f} acc {100 * test_accuracy:.2f}% | {len(train_x) / train_seconds:.0f} img/s, "
              f"{seconds:.0f} s", flush=True)
    print(json.dumps({"blocks": blocks, "epochs": args.epochs, "test_accuracy": history,
                      "best": max(history), "final": history[-1], "threads": torch.get_num_threads(),
                      "seconds": round(time.perf_counter() - run_start, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
