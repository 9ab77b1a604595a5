#!/usr/bin/python3
"""A PyTorch transformer encoder classifier as ONNX, for serving an imported model
(bench/compare_serving.sh --imported NAME=FILE:49x64).

  export_torch_encoder.py --out encoder.onnx [--opset 17]

The size of attn-cnn's attention part: tokens (N, 49, 64) -> nn.TransformerEncoder of two
nn.TransformerEncoderLayer(64, 4 heads, feed-forward 128, GELU, pre-norm, batch_first)
-> LayerNorm -> mean over the tokens -> Linear(64, 10). Seeded weights, eval mode, exported
by this python's torch with its TorchScript exporter and a dynamic batch axis. The test
goldens (tests/onnx/make_torch_onnx.py) are smaller; this one is for timing.
"""
import argparse
import json

import torch
from torch import nn


class EncoderClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, dropout=0.1, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.norm(self.encoder(x)).mean(dim=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = EncoderClassifier().eval()
    x = torch.randn(2, 49, 64)
    kwargs = {"dynamo": False} if int(torch.__version__.split(".")[0]) >= 2 else {}
    torch.onnx.export(model, x, args.out, opset_version=args.opset, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, do_constant_folding=True, **kwargs)
    print(json.dumps({"onnx": args.out, "torch": torch.__version__, "opset": args.opset}))


if __name__ == "__main__":
    main()
