#!/usr/bin/python3
"""PyTorch parity goldens for ember's models.

Run with Debian's PyTorch (python3-torch, 1.13):  /usr/bin/python3 tests/pytorch/make_goldens.py
It writes, in tests/data/:
- seed_cnn_golden.safetensors: the seed CNN at PyTorch's default initialization
  (torch.manual_seed(0)) on the first 8 Fashion-MNIST test images, with the logits, the
  cross-entropy loss, every parameter gradient, and every parameter after 3 Adam steps
  (lr 1e-3) on that batch;
- attn_cnn_golden.safetensors: the attn-cnn model (conv blocks, tokens, 2 pre-norm
  transformer encoder blocks, mean pool) on the first 4 test images: logits, loss, every
  parameter gradient;
- mha_golden.safetensors: one nn.MultiheadAttention(32, 4, batch_first=True) on a random
  (3, 11, 32) batch, MSE against a random target: output, loss, every parameter gradient.
Parameter names are ember's ("block1.attention.in_proj_weight", ...). The C++ test (tests/engine/parity_test.cpp) loads the same
weights into ember and compares; it needs no Python. The file is committed.
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn

from ember_models import FASHION_MNIST as DATA, AttnCnn, SeedCnn, read_idx

HERE = os.path.dirname(os.path.abspath(__file__))


def write_safetensors(path, tensors, metadata):
    """The safetensors format by hand: 8-byte little-endian header length, JSON header, data."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        dtype = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}[array.dtype]
        data = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def ember_name(name):
    """PyTorch's parameter names -> ember's (node.parameter)."""
    name = name.replace("attention.out_proj.weight", "attention.out_proj_weight")
    name = name.replace("attention.out_proj.bias", "attention.out_proj_bias")
    return "position.weight" if name == "position" else name


def gradients_golden(model, x, target, loss_fn, out_name):
    tensors = {"input": x.numpy()}
    tensors["target"] = target.numpy()
    for name, p in model.named_parameters():
        # Random biases and norm parameters, so a gradient that ignores them shows up.
        if name.endswith("bias") or "norm" in name:
            with torch.no_grad():
                p.uniform_(-0.5, 0.5) if name.endswith("bias") else p.uniform_(0.5, 1.5)
        tensors["param." + ember_name(name)] = p.detach().numpy().copy()
    output = model(x)
    loss = loss_fn(output, target)
    loss.backward()
    tensors["output"] = output.detach().numpy().copy()
    tensors["loss"] = np.array([loss.item()], dtype=np.float32)
    for name, p in model.named_parameters():
        tensors["grad." + ember_name(name)] = p.grad.detach().numpy().copy()
    metadata = {"made_by": "tests/pytorch/make_goldens.py", "torch": torch.__version__, "seed": "0", "threads": "1"}
    out = os.path.join(HERE, "..", "data", out_name)
    write_safetensors(out, tensors, metadata)
    print("wrote", os.path.normpath(out), "loss", tensors["loss"][0], file=sys.stderr)


def attention_goldens():
    torch.manual_seed(0)
    images = read_idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))[:4]
    labels = read_idx(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"))[:4]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(4, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    gradients_golden(AttnCnn(), x, y, nn.CrossEntropyLoss(), "attn_cnn_golden.safetensors")

    torch.manual_seed(1)

    class Single(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x):
            return self.attention(x, x, x, need_weights=False)[0]

    x = torch.randn(3, 11, 32)
    gradients_golden(Single(), x, torch.randn(3, 11, 32), nn.MSELoss(), "mha_golden.safetensors")


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = read_idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))[:8]
    labels = read_idx(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"))[:8]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(8, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))

    model = SeedCnn()
    tensors = {"input": x.numpy(), "labels": y.numpy()}
    for name, p in model.named_parameters():
        tensors["param." + name] = p.detach().numpy().copy()

    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(3):
        optimizer.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        if step == 0:
            tensors["logits"] = logits.detach().numpy().copy()
            tensors["loss"] = np.array([loss.item()], dtype=np.float32)
            for name, p in model.named_parameters():
                tensors["grad." + name] = p.grad.detach().numpy().copy()
        optimizer.step()
    for name, p in model.named_parameters():
        tensors["after3." + name] = p.detach().numpy().copy()

    metadata = {"made_by": "tests/pytorch/make_goldens.py", "torch": torch.__version__, "seed": "0", "threads": "1",
                "batch": "first 8 Fashion-MNIST t10k images, /255", "optimizer": "Adam lr 1e-3, 3 steps"}
    out = os.path.join(HERE, "..", "data", "seed_cnn_golden.safetensors")
    write_safetensors(out, tensors, metadata)
    print("wrote", os.path.normpath(out), "loss", tensors["loss"][0], file=sys.stderr)
    attention_goldens()


if __name__ == "__main__":
    main()
