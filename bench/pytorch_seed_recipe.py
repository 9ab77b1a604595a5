#!/usr/bin/python3
"""Time to accuracy in PyTorch: what `ember train --model seed-cnn --data fashion-mnist`
does with the same flags, printing the same lines (each evaluation with the wall time
since the process started) so the two can be read side by side.

Same model (tests/pytorch/ember_models.py SeedCnn, PyTorch's default initialization),
Fashion-MNIST normalized as ember's loader does ((x/255 - mean) / std), reshuffled every
epoch, the last batch partial; Adam (or SGD/AdamW) over every parameter; the schedule as
ember runs it: onecycle is OneCycleLR(max_lr=lr, total_steps, pct_start, div_factor,
final_div_factor, cycle_momentum=False) over the run's steps (--max-steps, else epochs x
batches), stepped after every optimizer step (ember schedules the rate only); cosine as in
bench/pytorch_resnet_recipe.py. --max-steps ends the run within its last epoch, as ember's.
The test split is evaluated every --eval-every steps and after every epoch; with
--stop-at-accuracy the run ends at the first evaluation that reaches it. The elapsed time
counts from the process's start (/proc/self/stat), so Python's and torch's start-up and
the data loading are in it, as they are in ember's.

  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp \\
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \\
  /usr/bin/python3 bench/pytorch_seed_recipe.py --threads 2 [ember's flags]

The defaults are the README's recipe (tools/quickstart.sh):

  ember train --model seed-cnn --data fashion-mnist --batch-size 64 --optimizer adam \\
    --lr 5e-3 --schedule onecycle --max-steps 1400 --label-smoothing 0.1 \\
    --mean 0.2860 --std 0.3530 --threads 2

The last line is JSON: the first evaluation at or above --target (default 90%: step,
accuracy, seconds since start), the final accuracy and the total seconds.
"""
import os
import time


def seconds_since_process_start():
    """Wall time since this process started (the kernel's start time, 10 ms ticks)."""
    with open("/proc/self/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    start_ticks = int(fields[19])  # field 22, starttime, counted after the command name
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")


import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--max-steps", type=int, default=1400, help="optimizer steps in all, overriding --epochs (0: --epochs decides)")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="adam")
parser.add_argument("--lr", type=float, default=5e-3)
parser.add_argument("--momentum", type=float, default=0.9)
parser.add_argument("--weight-decay", type=float, default=0.0)
parser.add_argument("--schedule", choices=["constant", "cosine", "onecycle"], default="onecycle")
parser.add_argument("--pct-start", type=float, default=0.3)
parser.add_argument("--div-factor", type=float, default=25.0)
parser.add_argument("--final-div-factor", type=float, default=1e4)
parser.add_argument("--label-smoothing", type=float, default=0.1)
parser.add_argument("--mean", type=float, default=0.2860)  # Fashion-MNIST's pixel mean and standard deviation
parser.add_argument("--std", type=float, default=0.3530)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--train-limit", type=int, default=0, help="use only the first N training images (0: all)")
parser.add_argument("--eval-every", type=int, default=0, help="also evaluate every N optimizer steps (0: per epoch)")
parser.add_argument("--stop-at-accuracy", type=float, default=0.0, help="percent; 0: never")
parser.add_argument("--target", type=float, default=90.0, help="percent: the JSON line reports when it was first reached")
parser.add_argument("--eval-batch", type=int, default=1000, help="test images per forward pass")
args = parser.parse_args()
os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch starts its pools

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pytorch"))
from ember_models import SeedCnn, evaluate, fashion_mnist_split, runtime_libraries  # noqa: E402

torch.set_num_threads(args.threads)


def split(prefix):
    return fashion_mnist_split(prefix, args.mean, args.std, args.train_limit if prefix == "train" else 0)


def main():
    train_x, train_y = split("train")
    test_x, test_y = split("t10k")
    torch.manual_seed(args.seed)
    model = SeedCnn()
    params = model.parameters()
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    elif args.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    b = args.batch_size
    batches = (len(train_x) + b - 1) // b
    # ember's --max-steps: the run ends within its last epoch.
    total_steps = args.max_steps if args.max_steps > 0 else args.epochs * batches
    epochs = (total_steps + batches - 1) // batches
    per_step = per_epoch = None
    if args.schedule == "onecycle":
        per_step = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=args.lr, total_steps=total_steps, pct_start=args.pct_start,
            div_factor=args.div_factor, final_div_factor=args.final_div_factor, cycle_momentum=False)
    elif args.schedule == "cosine":
        per_epoch = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    # ember evaluates with the training loss, label smoothing included.
    train_loss_fn = test_loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    blas, allocator = runtime_libraries()
    print(f"training: seed-cnn, {sum(p.numel() for p in model.parameters())} parameters, {len(train_x)} training and "
          f"{len(test_x)} test samples; torch {torch.__version__}, {torch.get_num_threads()} threads, {blas}, "
          f"{allocator}; {vars(args)}", flush=True)
    generator = torch.Generator().manual_seed(args.seed)
    reached = None  # (step, accuracy, seconds) of the first evaluation at or above --target
    step = 0
    accuracy = 0.0
    stopped = False

    last_loss = 0.0

    def evaluation(epoch, batch, epoch_total=None, evaluated=False):
        """Evaluates (unless `evaluated`: the last evaluation's results), prints the line
        ember prints, and says whether to stop."""
        nonlocal reached, accuracy, last_loss
        if not evaluated:
            last_loss, accuracy = evaluate(model, test_x, test_y, test_loss_fn, args.eval_batch)
        loss = last_loss
        elapsed = seconds_since_process_start()
        lr = optimizer.param_groups[0]["lr"] if per_step is None else per_step.get_last_lr()[0]
        if epoch_total is None:
            print(f"step {step} (epoch {epoch}, batch {batch}/{batches}): test loss {loss:.4f} acc {100 * accuracy:.2f}% | "
                  f"lr {lr:.3g} | {elapsed:.1f} s elapsed", flush=True)
        else:
            train_loss, train_correct, samples, train_seconds, seconds = epoch_total
            stopped_at = "" if batch == batches else f" (stopped after batch {batch}/{batches})"
            print(f"epoch {epoch}{stopped_at}: train loss {train_loss / samples:.4f} acc {100 * train_correct / samples:.2f}% | "
                  f"test loss {loss:.4f} acc {100 * accuracy:.2f}% | {samples / train_seconds:.0f} img/s, {seconds:.0f} s | "
                  f"{elapsed:.1f} s elapsed", flush=True)
        if reached is None and 100 * accuracy >= args.target:
            reached = {"step": step, "accuracy": round(100 * accuracy, 2), "seconds": round(elapsed, 2)}
        return args.stop_at_accuracy > 0 and 100 * accuracy >= args.stop_at_accuracy

    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        evaluation_seconds = 0.0
        order = torch.randperm(len(train_x), generator=generator)
        total_loss = correct = samples = 0.0
        batch = 0
        for batch in range(1, batches + 1):
            index = order[(batch - 1) * b:batch * b]
            x, y = train_x[index], train_y[index]
            optimizer.zero_grad()
            out = model(x)
            loss = train_loss_fn(out, y)
            loss.backward()
            optimizer.step()
            if per_step is not None:
                per_step.step()
            step += 1
            total_loss += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            samples += len(y)
            last_step = batch == batches or step == total_steps
            if args.eval_every and step % args.eval_every == 0 and not last_step:
                evaluation_start = time.perf_counter()
                stopped = evaluation(epoch, batch)
                evaluation_seconds += time.perf_counter() - evaluation_start
                if stopped:
                    break
            if step == total_steps:
                break
        train_seconds = time.perf_counter() - start - evaluation_seconds
        if per_epoch is not None:
            per_epoch.step()
        # A stop within the epoch reports that evaluation's results again, as ember does.
        stopped = evaluation(epoch, batch, (total_loss, correct, samples, train_seconds, time.perf_counter() - start),
                             evaluated=stopped) or stopped
        if stopped:
            print(f"test accuracy {100 * accuracy:.2f}% >= {args.stop_at_accuracy:g}% (--stop-at-accuracy) after {step} steps, "
                  f"{seconds_since_process_start():.1f} s: stopping", flush=True)
            break
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "target": args.target,
                      "reached": reached, "final_accuracy": round(100 * accuracy, 2), "steps": step,
                      "seconds": round(seconds_since_process_start(), 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
