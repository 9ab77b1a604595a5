"""ember's built-in models (engine/model_spec.cpp) in PyTorch, with ember's layer names and
semantics, and the Fashion-MNIST reader. One definition for the parity goldens
(tests/pytorch/make_goldens.py) and the benchmarks (bench/pytorch_models.py,
bench/pytorch_train.py); a change to a built-in model's spec belongs here too.
"""
import gzip
import os
import struct

import numpy as np
import torch
import torch.nn as nn

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
RESNET_BLOCKS = 2  # residual blocks per stage of the built-in resnet (ResNet-14)


def read_idx(path):
    """An IDX file (the MNIST format, gzipped) as a numpy array of uint8."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    _, _, dtype, rank = struct.unpack(">BBBB", raw[:4])
    assert dtype == 0x08, f"{path}: expected unsigned bytes (0x08), found type 0x{dtype:02x}"
    dims = struct.unpack(">" + "I" * rank, raw[4:4 + 4 * rank])
    return np.frombuffer(raw[4 + 4 * rank:], dtype=np.uint8).reshape(dims)


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


class LeNet(nn.Module):
    """LeNet-5 with ReLU and max pooling on 32x32 inputs (28x28 images zero-padded by 2)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc3(torch.relu(self.fc2(x)))


class Block(nn.Module):
    """ember's transformer_encoder_block: pre-norm, GELU (erf) MLP."""

    def __init__(self, d, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attention = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.mlp_in = nn.Linear(d, hidden)
        self.mlp_out = nn.Linear(hidden, d)

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        return x + self.mlp_out(torch.nn.functional.gelu(self.mlp_in(self.norm2(x))))


class AttnCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.position = nn.Parameter(torch.randn(49, 64) * 0.02)
        self.block1 = Block(64, 4, 128)
        self.block2 = Block(64, 4, 128)
        self.norm = nn.LayerNorm(64)
        self.classifier = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv2(torch.relu(self.conv1(x)))), 2)
        x = torch.max_pool2d(torch.relu(self.conv3(x)), 2)
        x = x.flatten(2).transpose(1, 2) + self.position  # (N, 49, 64)
        x = self.block2(self.block1(x))
        return self.classifier(self.norm(x).mean(dim=1))


class AttentionPool(nn.Linear):
    """ember's attention_pool: (N, T, C) -> (N, C), the softmax over t of a Linear(C, 1)
    score weighting the tokens; its weight (1, C) and bias (1) are that Linear's."""

    def __init__(self, features):
        super().__init__(features, 1)

    def forward(self, x):
        weights = torch.softmax(super().forward(x).squeeze(-1), dim=1)  # (N, T)
        return torch.bmm(weights.unsqueeze(1), x).squeeze(1)


class AttentionMse(nn.Module):
    """The tutorial's attention example: embed 16 tokens of 8 features, attention-pool, Linear -> 4."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.attention = AttentionPool(32)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.attention(self.embed(x)))


class ConvBn(nn.Module):
    """A bias-free convolution and the BatchNorm after it (its bias would be cancelled)."""

    def __init__(self, in_channels, out_channels, kernel, stride):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return self.bn(self.conv(x))


class ResidualBlock(nn.Module):
    """ember's residual_block (the CIFAR ResNet's basic block): conv3x3(stride) -> bn -> relu
    -> conv3x3 -> bn, plus the input (or its 1x1-conv projection and bn when the stride or
    the channel count changes), then relu."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = ConvBn(in_channels, out_channels, 1, stride) if stride != 1 or in_channels != out_channels else None

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    """ember's built-in resnet: a CIFAR-style residual network. A 3x3 stem (conv, bn, relu),
    three stages of `blocks` residual blocks with 16, 32 and 64 channels (the second and
    third start with a stride-2 block), global average pooling and a Linear head."""

    def __init__(self, blocks=RESNET_BLOCKS, in_channels=1, classes=10):
        super().__init__()
        self.stem = ConvBn(in_channels, 16, 3, 1)
        channels = 16
        for stage, (width, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
            layers = nn.Module()
            for block in range(1, blocks + 1):
                layers.add_module(f"block{block}", ResidualBlock(channels, width, stride if block == 1 else 1))
                channels = width
            self.add_module(f"stage{stage}", layers)
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for stage in (self.stage1, self.stage2, self.stage3):
            for block in stage.children():
                x = block(x)
        return self.head(x.mean(dim=(2, 3)))


# name -> (module class, one sample's input shape, loss), as in engine/model_spec.cpp.
BUILTIN_MODELS = {
    "seed-cnn": (SeedCnn, (1, 28, 28), nn.CrossEntropyLoss),
    "lenet": (LeNet, (1, 32, 32), nn.CrossEntropyLoss),
    "attn-cnn": (AttnCnn, (1, 28, 28), nn.CrossEntropyLoss),
    "attention-mse": (AttentionMse, (16, 8), nn.MSELoss),
    "resnet": (ResNet, (1, 28, 28), nn.CrossEntropyLoss),
}


def fashion_mnist_split(prefix, mean, std, limit=0):
    """Fashion-MNIST's `prefix` split ("train" or "t10k") as normalized (N, 1, 28, 28) floats
    and int64 labels; limit > 0 keeps the first `limit` images."""
    images = read_idx(os.path.join(FASHION_MNIST, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(FASHION_MNIST, f"{prefix}-labels-idx1-ubyte.gz"))
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = (torch.from_numpy(images.astype(np.float32)).reshape(-1, 1, 28, 28) / 255.0 - mean) / std
    return x, torch.from_numpy(labels.astype(np.int64))


def evaluate(model, x, y, loss_fn, batch):
    """Mean loss and accuracy of `model` over (x, y), `batch` images per forward pass."""
    model.eval()
    loss = correct = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = model(x[i:i + batch])
            loss += loss_fn(out, y[i:i + batch]).item() * len(out)
            correct += (out.argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return loss / len(x), correct / len(x)


def runtime_libraries():
    """Which BLAS and allocator this process loaded (what the bench scripts print)."""
    with open("/proc/self/maps") as maps:
        text = maps.read()
    blas = "openblas" if "libopenblas" in text else ("netlib blas (slow)" if "libblas" in text else "unknown")
    allocator = "jemalloc" if "libjemalloc" in text else "glibc malloc"
    return blas, allocator
