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
  (3, 11, 32) batch, MSE against a random target: output, loss, every parameter gradient;
- batch_norm_golden.safetensors: a small residual network with both BatchNorm kinds
  (BatchNormNet below) on the first 8 test images, in training mode: the logits, the
  cross-entropy loss and every parameter gradient of the first step, the running
  statistics after that step ("after1.<buffer>") and, after 3 SGD steps (momentum 0.9,
  lr 0.1), every parameter ("after3.<parameter>"), the running statistics
  ("after3.<buffer>", num_batches_tracked as I64) and the eval-mode logits
  ("eval.output"). Its ember spec is in tests/engine/batch_norm_parity_test.cpp.
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

from ember_models import FASHION_MNIST as DATA, AttnCnn, ConvBn, ResidualBlock, SeedCnn, read_idx

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


class BatchNormNet(nn.Module):
    """Every BatchNorm path of the resnet, small: a conv-bn-relu stem, one residual block
    that strides and widens (so its shortcut is a 1x1 conv and a BatchNorm2d), global
    average pooling, Linear -> BatchNorm1d -> ReLU, and a Linear head."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBn(1, 4, 3, 1)
        self.block = ResidualBlock(4, 8, 2)
        self.fc = nn.Linear(8, 6)
        self.bn = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        x = self.block(torch.relu(self.stem(x)))
        return self.head(torch.relu(self.bn(self.fc(x.mean(dim=(2, 3))))))


def batch_norm_golden():
    torch.manual_seed(2)
    images = read_idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))[:8]
    labels = read_idx(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"))[:8]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(8, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    model = BatchNormNet()
    tensors = {"input": x.numpy(), "labels": y.numpy()}
    for name, p in model.named_parameters():
        # Random affine parameters and biases, so a gradient or a step that ignores them shows up.
        if ".bn" in "." + name or name.endswith("bias"):
            with torch.no_grad():
                p.uniform_(-0.5, 0.5) if name.endswith("bias") else p.uniform_(0.5, 1.5)
        tensors["param." + name] = p.detach().numpy().copy()

    def buffers(prefix):
        for name, b in model.named_buffers():
            tensors[prefix + name] = b.detach().numpy().copy()

    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for step in range(3):
        optimizer.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        if step == 0:
            tensors["output"] = logits.detach().numpy().copy()
            tensors["loss"] = np.array([loss.item()], dtype=np.float32)
            for name, p in model.named_parameters():
                tensors["grad." + name] = p.grad.detach().numpy().copy()
            buffers("after1.")
        optimizer.step()
    for name, p in model.named_parameters():
        tensors["after3." + name] = p.detach().numpy().copy()
    buffers("after3.")
    model.eval()
    with torch.no_grad():
        tensors["eval.output"] = model(x).numpy().copy()
    metadata = {"made_by": "tests/pytorch/make_goldens.py", "torch": torch.__version__, "seed": "2", "threads": "1",
                "batch": "first 8 Fashion-MNIST t10k images, /255",
                "optimizer": "SGD lr 0.1 momentum 0.9, 3 steps in training mode, then eval"}
    out = os.path.join(HERE, "..", "data", "batch_norm_golden.safetensors")
    write_safetensors(out, tensors, metadata)
    print("wrote", os.path.normpath(out), "loss", tensors["loss"][0], file=sys.stderr)


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
    batch_norm_golden()


if __name__ == "__main__":
    main()
