#!/usr/bin/env python3
"""Predicted data-parallel scaling of ember training (docs/distributed-scaling.md).

A step on N machines with global batch B: every machine computes B/N samples (t_s seconds
each on one core, measured; --cores divides it, as if threads scaled perfectly), then the
gradient exchange runs: reduce-scatter plus allgather, the same bytes as a ring all-reduce,
    T_comm(N) = 2 (N-1)/N * G / bandwidth + 2 (N-1) * latency,
exposed (with one gradient lane per machine the exchange starts when the backward ends),
then the optimizer, replicated on every machine (T_opt, does not shrink with N). A model
with S sync points (batch statistics) adds S small allgathers per step, latency-bound:
S * ceil(log2 N) * latency (recursive doubling).
Throughput X(N) = B / (B/N * t_s + T_comm(N) + T_opt); efficiency X(N) / (N * X(1)) with
X(1) at the same per-machine batch. B_half(N) = N * (T_comm(N) + T_opt) / t_s is the
global batch at which half of every step is not computing samples: below it, adding
machines stops paying.

    scaling_model.py [--latency-us 10] [--cores 1] [--model NAME=MS_PER_SAMPLE:GRADIENT_MB:OPTIMIZER_MS[:SYNC_POINTS] ...]
"""
import argparse
import math

MACHINES = [1, 2, 4, 8, 16, 32, 64]
# Measured on the 2-vCPU development VM, one thread, batch 64 (docs/distributed-scaling.md).
MEASURED = ["seed-cnn=0.31:3.22:1.1", "attn-cnn=2.3:0.40:0.5", "resnet=2.7:0.70:0.12:30"]
LINKS_GBPS = [10, 25, 100]


def comm_seconds(n, gradient_bytes, gbps, latency, sync_points=0):
    if n == 1:
        return 0.0
    exchange = 2.0 * (n - 1) / n * gradient_bytes / (gbps * 1e9 / 8) + 2.0 * (n - 1) * latency
    return exchange + sync_points * math.ceil(math.log2(n)) * latency


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-us", type=float, default=10.0)
    parser.add_argument("--batch-per-machine", type=int, default=64)
    parser.add_argument("--cores", type=float, default=1.0)
    parser.add_argument("--model", action="append",
                        help="NAME=MS_PER_SAMPLE:GRADIENT_MB:OPTIMIZER_MS[:SYNC_POINTS] (one thread, ember bench --training --profile)")
    args = parser.parse_args()
    models = args.model or MEASURED
    latency = args.latency_us * 1e-6
    for entry in models:
        name, numbers = entry.split("=")
        fields = [float(v) for v in numbers.split(":")]
        ms, mb, opt_ms = fields[:3]
        sync_points = fields[3] if len(fields) > 3 else 0
        t_s, gradient, t_opt = ms * 1e-3 / args.cores, mb * 1e6, opt_ms * 1e-3
        one = args.batch_per_machine / (args.batch_per_machine * t_s + t_opt)
        print(f"\n{name}: {ms} ms/sample/core on {args.cores:g} cores, {mb} MB gradient, optimizer {opt_ms} ms, "
              f"{sync_points:g} sync points, {args.batch_per_machine} samples per machine per step")
        print("link     N  comm_ms  img/s   efficiency  B_half")
        for gbps in LINKS_GBPS:
            for n in MACHINES:
                batch = args.batch_per_machine * n
                comm = comm_seconds(n, gradient, gbps, latency, sync_points)
                step = batch / n * t_s + comm + t_opt
                throughput = batch / step
                efficiency = throughput / (n * one)
                b_half = n * (comm + t_opt) / t_s
                print(f"{gbps:3d}Gb/s {n:3d} {1e3 * comm:8.3f} {throughput:8.0f} {100 * efficiency:8.1f}%  {b_half:7.0f}")


if __name__ == "__main__":
    main()
