#!/usr/bin/env bash
# README command 1: install what is missing, build, and train the seed CNN on
# Fashion-MNIST (3 epochs, Adam, batch 64). Extra arguments go to `ember train`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/tools/setup.sh" --with-data
cd "$root"
mkdir -p runs
exec ./build/release/ember train --model seed-cnn --data fashion-mnist --epochs 3 --batch-size 64 --optimizer adam \
  --lr 1e-3 --threads "$(nproc)" --save runs/seed-cnn.safetensors --log runs/seed-cnn.csv "$@"
