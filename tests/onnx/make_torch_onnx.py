#!/usr/bin/python3
"""ONNX files exported by PyTorch, and PyTorch's logits, for ember's import tests.

Run with Debian's PyTorch (python3-torch 1.13):  /usr/bin/python3 tests/onnx/make_torch_onnx.py
and with a current PyTorch (2.x from PyPI, with the `onnx` package installed, which its
TorchScript exporter needs):  <venv>/bin/python tests/onnx/make_torch_onnx.py
Both write the same models in tests/data/onnx/ (committed, so the tests need no Python):
torch 1.13 the files named below, torch 2.x the same files prefixed "torch2_" (exported
with dynamo=False, the TorchScript exporter; the files in the repository were made by
torch 2.15) and torch2_goldens.safetensors; torch 2 exports attention at opset 14 or later, so
its low-opset twins are at opset 14 (torch2_encoder_*_opset14, torch2_mha_seq_first). Torch 2 writes the attention differently: the
in-projection reshaped to (T, N, 3, E) and Gathered per third, the scale 1/D^(1/4) on the
queries and on the transposed keys each, computed from the shapes (Cast, Sqrt, Div), and the
out-projection as a Gemm over (T * N, E) (onnx_attention_match.h). The files:
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
- encoder_relu_post.onnx, encoder_gelu_pre.onnx (opset 17) and their _opset13 twins: a
  small transformer encoder classifier (N, 5, 6) -> Linear(6, 16) -> nn.TransformerEncoder of
  two nn.TransformerEncoderLayer(16, 4 heads, 32, batch_first=True), ReLU with norm_first
  False or GELU with norm_first True -> mean over the tokens -> Linear(16, 3), dynamic batch;
  PyTorch writes each attention as 94 nodes of shape arithmetic, Reshape, Transpose,
  MatMul, Div and Softmax (onnx_attention_match.h);
- mha_batch_first.onnx (opset 17): a bare nn.MultiheadAttention(16, 4, batch_first=True)
  over (N, 5, 16); mha_seq_first.onnx (opset 13): the same with batch_first=False and the
  input and output transposed at the boundary; mha_one_head.onnx and mha_no_bias.onnx (opset
  17): batch_first with 1 head, and with 4 heads and bias=False; mha_causal.onnx (opset 17):
  batch_first with the causal attn_mask of nn.Transformer.generate_square_subsequent_mask;
- torch_goldens.safetensors (torch2_goldens.safetensors): for each model, a fixed random input "<model>.input" (batch
  3) and PyTorch's output "<model>.output".

The transformers' outputs are PyTorch's own forward with autograd on, which keeps
TransformerEncoderLayer and MultiheadAttention off their fused inference fast path; the
script checks that the fast path (no_grad) gives the same outputs within 1e-5 (where it runs:
torch 1.13's fails on bias=False), and that the
export holds ONNX's default-domain ops only (the fast path's fused ops would not).
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
TORCH2 = int(torch.__version__.split(".")[0]) >= 2
PREFIX = "torch2_" if TORCH2 else ""
# torch 2's default exporter is torch.export (dynamo); ember's goldens use the TorchScript one.
EXPORT_OPTIONS = {"dynamo": False} if TORCH2 else {}
# torch 2 exports the attention as aten::scaled_dot_product_attention, which needs opset 14.
ATTENTION_LOW_OPSET = 14 if TORCH2 else 13


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
    name = PREFIX + name
    model.eval()
    x = torch.randn(3, *input_shape)
    with torch.no_grad():
        y = model(x)
    torch.onnx.export(model, x, os.path.join(OUT, name + ".onnx"), opset_version=opset, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      training=training, do_constant_folding=True, **EXPORT_OPTIONS)
    return {name + ".input": x.numpy(), name + ".output": y.numpy()}


class EncoderClassifier(nn.Module):
    def __init__(self, activation, norm_first):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.1, activation=activation, batch_first=True,
                                           norm_first=norm_first)
        self.enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.enc(self.inp(x)).mean(dim=1))


class SelfAttention(nn.Module):
    def __init__(self, batch_first, heads=4, bias=True, causal=False):
        super().__init__()
        self.batch_first = batch_first
        self.mha = nn.MultiheadAttention(16, heads, batch_first=batch_first, bias=bias)
        self.mask = nn.Transformer.generate_square_subsequent_mask(5) if causal else None

    def forward(self, x):
        if not self.batch_first:
            x = x.transpose(0, 1)
        y = self.mha(x, x, x, need_weights=False, attn_mask=self.mask)[0]
        return y if self.batch_first else y.transpose(0, 1)


def randomize_biases(model):
    # PyTorch starts attention biases at zero; random ones make the goldens check their use.
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            parameter.data.copy_(torch.randn_like(parameter) * 0.1)


def export_attention(name, model, input_shape, opset):
    name = PREFIX + name
    model.eval()
    x = torch.randn(3, *input_shape)
    y = model(x).detach()  # autograd on: the slow path, as the export traces it
    try:
        with torch.no_grad():
            fast = model(x)
        assert torch.allclose(y, fast, atol=1e-5), name + ": PyTorch's fast path differs"
    except TypeError:
        pass  # torch 1.13's native MultiheadAttention requires the bias (bias=False fails there)
    path = os.path.join(OUT, name + ".onnx")
    torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, do_constant_folding=True, **EXPORT_OPTIONS)
    import onnx
    domains = {node.domain for node in onnx.load(path).graph.node}
    assert domains <= {"", "ai.onnx"}, name + ": ops outside ONNX's default domain: " + str(domains)
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
    for activation, norm_first, name in (("relu", False, "encoder_relu_post"), ("gelu", True, "encoder_gelu_pre")):
        encoder = EncoderClassifier(activation, norm_first)
        randomize_biases(encoder)
        tensors.update(export_attention(name, encoder, (5, 6), 17))
        tensors.update(export_attention(name + "_opset%d" % ATTENTION_LOW_OPSET, encoder, (5, 6), ATTENTION_LOW_OPSET))
    for batch_first, heads, bias, causal, name, opset in (
            (True, 4, True, False, "mha_batch_first", 17), (False, 4, True, False, "mha_seq_first", ATTENTION_LOW_OPSET),
            (True, 1, True, False, "mha_one_head", 17), (True, 4, False, False, "mha_no_bias", 17),
            (True, 4, True, True, "mha_causal", 17)):
        mha = SelfAttention(batch_first, heads, bias, causal)
        randomize_biases(mha)
        tensors.update(export_attention(name, mha, (5, 16), opset))
    write_safetensors(os.path.join(OUT, "torch2_goldens.safetensors" if TORCH2 else "torch_goldens.safetensors"), tensors,
                      {"source": "tests/onnx/make_torch_onnx.py", "torch": torch.__version__})


if __name__ == "__main__":
    main()
