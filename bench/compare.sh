#!/usr/bin/env bash
# ember vs PyTorch on every built-in model (training and inference, batch 1/64/256,
# 1 and 2 threads), interleaved, medians; thread scaling; the GEMM table. Writes
# bench/results/comparison.{md,svg,json} and prints the paths. bench/compare.py has the
# details; this only finds the build.
#
#   bash bench/compare.sh [--quick] [--rounds N] [--seconds S] [--models a,b] [--batches 64,256]
#                         [--no-gemm] [--build DIR] [--out DIR] [--torch-python PY]...
#
# --torch-python runs the peer on another PyTorch, e.g. the newest from PyPI in a venv
# (python3 -m venv V && V/bin/pip install torch): bash bench/compare.sh --torch-python V/bin/python
# Given more than once, every peer runs in the same interleaved rounds and has its columns
# and bars, named by its torch version; e.g. Debian's 1.13 beside PyPI's newest
# (tools/setup.sh --with-peers=torch puts it in build/peers-venv):
#   bash bench/compare.sh --torch-python /usr/bin/python3 --torch-python build/peers-venv/bin/python
#
# Needs a release build (tools/setup.sh: build/release/ember and ember_bench) and the
# PyTorch reference (tools/setup.sh --with-pytorch: python3-torch, OpenBLAS, jemalloc).
# The default run takes about 10-15 minutes on 2 cores; --quick a few and proves only
# that everything runs.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec /usr/bin/python3 "$root/bench/compare.py" "$@"
