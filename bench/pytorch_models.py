"""ember's built-in seed-cnn and attn-cnn as PyTorch modules, for the bench scripts.

The same definitions as tests/pytorch/make_goldens.py, whose goldens prove ember computes
what these compute.
"""
import torch
import torch.nn as nn


class SeedCnn(nn.Module):
    """Conv 1->32 3x3 pad 1, ReLU, MaxPool 2, Linear 6272->128, ReLU, Linear 128->10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 14 * 14, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


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


MODELS = {"seed-cnn": SeedCnn, "attn-cnn": AttnCnn}


def runtime_libraries():
    """Which BLAS and allocator this process loaded (compare_train.sh's check)."""
    with open("/proc/self/maps") as maps:
        text = maps.read()
    blas = "openblas" if "libopenblas" in text else ("netlib blas (slow)" if "libblas" in text else "unknown")
    allocator = "jemalloc" if "libjemalloc" in text else "glibc malloc"
    return blas, allocator
