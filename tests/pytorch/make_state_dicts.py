#!/usr/bin/python3
"""PyTorch state_dicts for `ember train --init` (engine/initial_weights.h).

Run with Debian's PyTorch (python3-torch, 1.13):  /usr/bin/python3 tests/pytorch/make_state_dicts.py
For attn-cnn and resnet (tests/pytorch/ember_models.py; between them every parameter kind
seed-cnn has, without its 3 MB fc1) it writes, in tests/data/:
- <model>_state_dict.safetensors: model.state_dict() as PyTorch names it ("conv1.weight",
  "block1.attention.out_proj.weight", "position", "stem.bn.running_mean",
  "stem.bn.num_batches_tracked" as I64, ...), what safetensors.torch.save_file writes
  (that package is not in Debian, so the format is written by hand, as make_goldens.py does);
- <model>_state_dict_logits.safetensors: an input batch (the first 4 Fashion-MNIST test
  images, /255) and the eval-mode logits PyTorch computes for it.
Biases, norm parameters and (for resnet) the running statistics are randomized first, so a
tensor ember loaded wrongly or not at all changes the logits. The files are committed;
tests/engine/initial_weights_test.cpp needs no Python.
"""
import os
import sys

import numpy as np
import torch

from ember_models import FASHION_MNIST as DATA, AttnCnn, ResNet, read_idx
from make_goldens import write_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))


def randomize(model):
    """Random biases and norm affine parameters; running statistics from 3 training-mode
    passes over random batches (so running_mean, running_var and num_batches_tracked are not
    their initial values)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.5, 0.5)
            elif "norm" in name or ".bn" in "." + name:
                p.uniform_(0.5, 1.5)
    if any(name.endswith("running_mean") for name, _ in model.named_buffers()):
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.rand(8, 1, 28, 28))
    model.eval()


def write(model_name, model, x):
    randomize(model)
    tensors = {}
    for name, value in model.state_dict().items():
        tensors[name] = value.detach().numpy().copy()
    with torch.no_grad():
        logits = model(x).numpy().copy()
    meta = {"made_by": "tests/pytorch/make_state_dicts.py", "torch": torch.__version__}
    stem = os.path.join(HERE, "..", "data", model_name.replace("-", "_") + "_state_dict")
    write_safetensors(stem + ".safetensors", tensors, meta)
    write_safetensors(stem + "_logits.safetensors", {"input": x.numpy(), "logits": logits}, meta)
    print("wrote", os.path.normpath(stem) + "*.safetensors:", len(tensors), "tensors", file=sys.stderr)


def main():
    torch.set_num_threads(1)
    images = read_idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))[:4]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(4, 1, 28, 28)
    for seed, name, make in [(11, "attn-cnn", AttnCnn), (12, "resnet", ResNet)]:
        torch.manual_seed(seed)
        write(name, make(), x)


if __name__ == "__main__":
    main()
