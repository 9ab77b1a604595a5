#!/usr/bin/env bash
# Serving: ember's InferenceSession vs ONNX Runtime and OpenVINO on every built-in image model
# (batch 1/64/256, 1 and 2 threads), interleaved, medians; img/s, and p50/p99 latency at
# batch 1. Writes bench/results/serving.{md,svg,json} and prints the paths.
# bench/compare_serving.py has the details; this only finds python.
#
#   bash bench/compare_serving.sh [--quick] [--rounds N] [--seconds S] [--models a,b] [--batches 1,64]
#                                 [--threads 1,2] [--peers onnxruntime,openvino] [--peers-python PY]
#                                 [--fresh-weights] [--build DIR] [--out DIR] [--dry-run]
#
# Needs a release build (build/release/ember), Debian's PyTorch for the ONNX export
# (tools/setup.sh --with-pytorch) and the peers' venv from PyPI (tools/setup.sh --with-peers:
# build/peers-venv, or $EMBER_PEERS_VENV). The default run takes about 5-10 minutes on 2
# cores; --quick about a minute and proves only that everything runs.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec /usr/bin/python3 "$root/bench/compare_serving.py" "$@"
