#!/usr/bin/python3
"""A built-in model as ONNX for the serving peers (bench/compare_serving.py).

  export_onnx.py --model M --out M.onnx [--checkpoint CKPT]

The architecture is tests/pytorch/ember_models.py's; the weights are an ember checkpoint's
(`ember train --save`) when --checkpoint is given, so ember and the peers compute the same
function, else torch's seeded initialisation. Exported with Debian's PyTorch 1.13 and its
legacy (TorchScript) exporter, opset 14, with a dynamic batch axis: input "x", output "y"
(logits). Prints one JSON line: {"model", "onnx", "torch", "opset", "weights"}.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pytorch"))
from ember_models import BUILTIN_MODELS  # noqa: E402

OPSET = 14
IMAGE_MODELS = ["seed-cnn", "lenet", "attn-cnn", "resnet"]


def read_checkpoint(path):
    """The float tensors of an ember checkpoint (safetensors), by name; optimizer state left out."""
    with open(path, "rb") as f:
        raw = f.read()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    base = 8 + length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__" or name.startswith("optimizer."):
            continue
        dtype = {"F32": "<f4", "I64": "<i8"}.get(entry["dtype"])
        if dtype is None:
            sys.exit(f"export_onnx: {path}: tensor {name} has dtype {entry['dtype']}, expected F32 or I64")
        begin, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(raw[base + begin:base + end], dtype=dtype).reshape(entry["shape"])
    return tensors


def torch_name(ember_name):
    """ember's parameter names -> PyTorch's (the inverse of make_goldens.py's ember_name)."""
    name = ember_name.replace("attention.out_proj_weight", "attention.out_proj.weight")
    name = name.replace("attention.out_proj_bias", "attention.out_proj.bias")
    return "position" if name == "position.weight" else name


def load_checkpoint(model, path):
    state = model.state_dict()
    loaded = {torch_name(k): torch.from_numpy(v.copy()) for k, v in read_checkpoint(path).items()}
    missing, extra = sorted(set(state) - set(loaded)), sorted(set(loaded) - set(state))
    if missing or extra:
        sys.exit(f"export_onnx: {path} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, value in loaded.items():
        if value.numel() == state[name].numel() == 1:  # a count: shape (1,) in ember, () in torch
            loaded[name] = value.reshape(state[name].shape)
        elif tuple(value.shape) != tuple(state[name].shape):
            sys.exit(f"export_onnx: {path}: {name} has shape {tuple(value.shape)}, expected {tuple(state[name].shape)}")
    model.load_state_dict({k: v.to(state[k].dtype) for k, v in loaded.items()})


def main():
    parser = argparse.ArgumentParser(description="A built-in ember model as ONNX (legacy exporter, opset 14).")
    parser.add_argument("--model", required=True, choices=IMAGE_MODELS)
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--checkpoint", help="an ember checkpoint of the same model: its weights")
    args = parser.parse_args()
    module, sample_shape, _ = BUILTIN_MODELS[args.model]
    torch.manual_seed(0)
    model = module()
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    model.eval()
    x = torch.rand(1, *sample_shape)
    # Not under torch.no_grad(): there, eval-mode nn.MultiheadAttention takes its fused fast
    # path (aten::_native_multi_head_attention), which the exporter cannot write.
    torch.onnx.export(model, x, args.out, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=OPSET)
    print(json.dumps({"model": args.model, "onnx": args.out, "torch": torch.__version__, "opset": OPSET,
                      "weights": args.checkpoint or "torch seed 0"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
