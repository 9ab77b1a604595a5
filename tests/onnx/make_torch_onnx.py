#!/usr/bin/python3
"""ONNX files exported by PyTorch, and PyTorch's logits, for ember's import tests.

Run with Debian's PyTorch (python3-torch 1.13):  /usr/bin/python3 tests/onnx/make_torch_onnx.py
It writes, in tests/data/onnx/ (committed, so the tests need no Python):
- lenet.onnx: tests/pytorch/ember_models.py's LeNet (Conv, Relu, MaxPool, Flatten, Gemm),
  opset 13, dynamic batch;
- resnet8.onnx: its ResNet with one block per stage (Conv, BatchNormalization, Relu, Add,
  ReduceMean over H and W, Gemm), opset 17, dynamic batch, exported in training mode
  "preserve" from eval() so the BatchNormalization nodes stay in the file (an eval export
  folds them into the convolutions); the BatchNorms' statistics and affine parameters are
  random, so they matter;
- gelu_mlp.onnx: Linear, GELU (the Erf form), LayerNorm, Linear, Softmax over (N, 16),
  opset 17; gelu_mlp_opset13.onnx: the same model at opset 13, where PyTorch writes the
  LayerNorm as ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add;
- torch_goldens.safetensors: for each model, a fixed random input "<model>.input" (batch
  3) and PyTorch's output "<model>.output".
"""
import os
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "pytorch"))
from ember_models import LeNet, ResNet  # noqa: E402
from make_goldens import write_safetensors  # noqa: E402

OUT = os.path.join(HERE, "..", "data", "onnx")


class GeluMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.gelu = nn.GELU()
        self.norm = nn.LayerNorm(32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x):
        return torch.softmax(self.fc2(self.norm(self.gelu(self.fc1(x)))), dim=-1)


def randomize_batch_norms(model):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn_like(module.running_mean) * 0.2)
            module.running_var.copy_(torch.rand_like(module.running_var) + 0.5)
            module.weight.data.copy_(torch.rand_like(module.weight) + 0.5)
            module.bias.data.copy_(torch.randn_like(module.bias) * 0.2)


def export(name, model, input_shape, opset, training=torch.onnx.TrainingMode.EVAL):
    model.eval()
    x = torch.randn(3, *input_shape)
    with torch.no_grad():
        y = model(x)
    torch.onnx.export(model, x, os.path.join(OUT, name + ".onnx"), opset_version=opset, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      training=training, do_constant_folding=True)
    return {name + ".input": x.numpy(), name + ".output": y.numpy()}


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    tensors = {}
    tensors.update(export("lenet", LeNet(), (1, 32, 32), 13))
    resnet = ResNet(blocks=1)
    with torch.no_grad():
        randomize_batch_norms(resnet)
    tensors.update(export("resnet8", resnet, (1, 28, 28), 17, torch.onnx.TrainingMode.PRESERVE))
    mlp = GeluMlp()
    tensors.update(export("gelu_mlp", mlp, (16,), 17))
    tensors.update(export("gelu_mlp_opset13", mlp, (16,), 13))
    write_safetensors(os.path.join(OUT, "torch_goldens.safetensors"), tensors,
                      {"source": "tests/onnx/make_torch_onnx.py", "torch": torch.__version__})


if __name__ == "__main__":
    main()
