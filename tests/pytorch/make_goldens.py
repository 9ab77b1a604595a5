#!/usr/bin/python3
"""PyTorch parity goldens for ember's models.

Run with Debian's PyTorch (python3-torch, 1.13):  /usr/bin/python3 tests/pytorch/make_goldens.py
It writes tests/data/seed_cnn_golden.safetensors: the seed CNN at PyTorch's default
initialization (torch.manual_seed(0)) on the first 8 Fashion-MNIST test images, with the
logits, the cross-entropy loss, every parameter gradient, and every parameter after 3 Adam
steps (lr 1e-3) on that batch. The C++ test (tests/engine/parity_test.cpp) loads the same
weights into ember and compares; it needs no Python. The file is committed.
"""
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    _, _, dtype, rank = struct.unpack(">BBBB", raw[:4])
    assert dtype == 0x08
    dims = struct.unpack(">" + "I" * rank, raw[4:4 + 4 * rank])
    return np.frombuffer(raw[4 + 4 * rank:], dtype=np.uint8).reshape(dims)


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


class SeedCnn(nn.Module):
    """The tutorial's CNN with its shape bug fixed: 28x28 input, one 2x2 pool -> 32*14*14."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 14 * 14, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


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


if __name__ == "__main__":
    main()
