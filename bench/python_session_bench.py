#!/usr/bin/env python3
"""What the Python module costs over the C++ session, and how Python threads scale.

  PYTHONPATH=build/release/python python3 bench/python_session_bench.py [--checkpoint CKPT]

1. Per-call overhead at batch 1: session.run(x, out=out) in a Python loop against the
   same session called in a C++ loop (Session._time_calls_in_cpp), interleaved rounds,
   medians; also session.run(x) allocating its output.
2. Scaling at batch 64: calls per second of 2 Python threads sharing one session against
   1 Python thread, each call on one compute thread (the GIL is released during a call).
Without --checkpoint it trains seed-cnn for one step into a temporary directory (the
weights do not change the speed).
"""
import argparse
import os
import statistics
import tempfile
import threading
import time

import numpy as np

import ember


def per_call_seconds(call, calls):
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def overhead(session, rounds, calls):
    x = np.zeros((1, *session.input_shape), np.float32)
    out = np.empty((1, *session.output_shape), np.float32)
    for _ in range(calls // 10):  # warm the workspace pool and caches
        session.run(x, out=out)
    cpp, python_out, python_new = [], [], []
    for _ in range(rounds):
        cpp.append(session._time_calls_in_cpp(x, calls))
        python_out.append(per_call_seconds(lambda: session.run(x, out=out), calls))
        python_new.append(per_call_seconds(lambda: session.run(x), calls))
    return statistics.median(cpp), statistics.median(python_out), statistics.median(python_new)


def calls_per_second(session, python_threads, seconds):
    x = np.zeros((64, *session.input_shape), np.float32)
    counts = [0] * python_threads
    start_barrier = threading.Barrier(python_threads + 1)
    stop = threading.Event()

    def worker(index):
        out = np.empty((64, *session.output_shape), np.float32)
        session.run(x, out=out)
        start_barrier.wait()
        while not stop.is_set():
            session.run(x, out=out)
            counts[index] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(python_threads)]
    for w in workers:
        w.start()
    start_barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a checkpoint to serve (default: seed-cnn after one step)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000, help="batch-1 calls per round")
    parser.add_argument("--seconds", type=float, default=2.0, help="per scaling measurement")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = os.path.join(directory, "seed-cnn.safetensors")
            ember.train(model="seed-cnn", data="fashion-mnist", max_steps=1, train_limit=64, test_limit=16, threads=1,
                        save=checkpoint)
        print(f"ember {ember.__version__}, {ember.info()['instruction_set']}, checkpoint {checkpoint}")

        session = ember.Session(checkpoint, threads=1, max_batch=64)
        cpp, python_out, python_new = overhead(session, args.rounds, args.calls)
        print(f"batch 1, 1 thread, median of {args.rounds} interleaved rounds of {args.calls} calls:")
        print(f"  C++ session.run           {cpp * 1e6:8.2f} us/call")
        print(f"  Python run(x, out=out)    {python_out * 1e6:8.2f} us/call  (+{(python_out - cpp) * 1e6:.2f} us)")
        print(f"  Python run(x)             {python_new * 1e6:8.2f} us/call  (+{(python_new - cpp) * 1e6:.2f} us)")

        print(f"batch 64, one compute thread per call, {args.seconds:g} s each, 3 interleaved rounds (median):")
        for budget in (1, 2):
            shared = ember.Session(checkpoint, threads=budget, max_batch=64)
            one, two = [], []
            for _ in range(3):
                one.append(calls_per_second(shared, 1, args.seconds))
                two.append(calls_per_second(shared, 2, args.seconds))
            one, two = statistics.median(one), statistics.median(two)
            print(f"  session threads={budget}: 1 Python thread {one * 64:8.0f} img/s, 2 Python threads "
                  f"{two * 64:8.0f} img/s = {two / one:.2f}x")


if __name__ == "__main__":
    main()
