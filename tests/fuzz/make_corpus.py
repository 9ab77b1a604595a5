#!/usr/bin/env python3
"""Regenerates the seed corpora under tests/fuzz/corpus/ from real files: tiny checkpoints
written by `ember train`, headers and a few images of the Fashion-MNIST IDX files, the
built-in model specs and the specs in tests/fuzz/specs/, and typical flag lines.

    tests/fuzz/make_corpus.py build/release/ember

Each input is kept to a few KB so the replay test stays fast."""
import gzip
import json
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile

here = pathlib.Path(__file__).resolve().parent
root = here.parents[1]
corpus = here / "corpus"
fashion = pathlib.Path("/usr/share/datasets/fashion-mnist")


def write(target, name, data):
    folder = corpus / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def idx_inputs():
    images = gzip.decompress((fashion / "t10k-images-idx3-ubyte.gz").read_bytes())
    labels = gzip.decompress((fashion / "t10k-labels-idx1-ubyte.gz").read_bytes())
    two_images = struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 28, 28) + images[16:16 + 2 * 784]
    five_labels = struct.pack(">BBBBI", 0, 0, 8, 1, 5) + labels[8:13]
    write("idx", "images_2", two_images)
    write("idx", "images_2.gz", gzip.compress(two_images, mtime=0))
    write("idx", "images_1x1x1", struct.pack(">BBBBIII", 0, 0, 8, 3, 1, 1, 1) + b"\x7f")
    write("idx", "labels_5", five_labels)
    write("idx", "labels_5.gz", gzip.compress(five_labels, mtime=0))
    # `cat a.gz b.gz`: read_maybe_gzipped joins the members.
    write("idx", "labels_5_two_members.gz", gzip.compress(five_labels[:6], mtime=0) + gzip.compress(five_labels[6:], mtime=0))
    write("idx", "images_header_only", images[:16])


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def checkpoints(ember):
    with tempfile.TemporaryDirectory() as work:
        runs = {
            "cnn_adam": ["--model", str(here / "specs/tiny_cnn.json")],
            "cnn_sgd_momentum": ["--model", str(here / "specs/tiny_cnn.json"), "--optimizer", "sgd"],
            "attention_sgd": ["--model", str(here / "specs/tiny_attention.json"), "--optimizer", "sgd", "--momentum", "0"],
        }
        for name, flags in runs.items():
            path = pathlib.Path(work) / (name + ".safetensors")
            subprocess.run([ember, "train", *flags, "--epochs", "1", "--train-limit", "64", "--test-limit", "64",
                            "--batch-size", "32", "--save", str(path)], check=True, stdout=subprocess.DEVNULL)
            for target in ("safetensors", "training_state", "c_api"):
                write(target, name + ".safetensors", path.read_bytes())
            onnx_inputs(ember, path, name)


def onnx_inputs(ember, checkpoint, name):
    """The checkpoint exported by `ember export` at the lowest and the default opset."""
    for opset in (13, 17):
        onnx = checkpoint.with_name(f"{name}.opset{opset}.onnx")
        done = subprocess.run([ember, "export", "--checkpoint", str(checkpoint), "--onnx", str(onnx), "--opset", str(opset)],
                              capture_output=True, text=True)
        if "without ONNX support" in done.stderr:
            return
        done.check_returncode()
        write("onnx", onnx.name, onnx.read_bytes())
    # PyTorch's export of GELU (the Erf form), LayerNormalization and Gemm; of
    # nn.MultiheadAttention (shape arithmetic around the attention); of a transformer encoder
    # classifier at opset 13 (attention, decomposed LayerNorm, GELU, residual Adds, a mean).
    write("onnx", "torch_gelu_mlp.onnx", (root / "tests/data/onnx/gelu_mlp.onnx").read_bytes())
    write("onnx", "torch_mha.onnx", (root / "tests/data/onnx/mha_batch_first.onnx").read_bytes())
    write("onnx", "torch_encoder.onnx", (root / "tests/data/onnx/encoder_gelu_pre_opset13.onnx").read_bytes())
    # torch 2's attention: the thirds Gathered, the scale computed from shapes.
    write("onnx", "torch2_mha.onnx", (root / "tests/data/onnx/torch2_mha_batch_first.onnx").read_bytes())


def safetensors_inputs():
    write("safetensors", "empty_header", safetensors({}))
    write("safetensors", "metadata_only", safetensors({}, {"format": "x", "note": "\u00e9"}))
    write("safetensors", "dtypes", safetensors({
        "f": ("F32", [2, 2], struct.pack("<4f", 1.0, -0.0, float("inf"), 2.5)),
        "i64": ("I64", [2], struct.pack("<2q", -1, 2**62)),
        "i32": ("I32", [1, 1], struct.pack("<i", -7)),
        "scalar": ("F32", [], struct.pack("<f", 3.0)),
        "empty": ("F32", [0, 3], b""),
    }))


def model_spec_inputs():
    source = (root / "engine/model_spec.cpp").read_text()
    for name, text in re.findall(r'const char\* const (\w+) = R"\((.*?)\)";', source, re.S):
        write("model_spec", name + ".json", text.strip() + "\n")
    for path in sorted((here / "specs").glob("*.json")):
        write("model_spec", path.name, path.read_bytes())
    for path in sorted((corpus / "model_spec").iterdir()):
        write("session", path.name, path.read_bytes())


def flags_inputs():
    lines = {
        "train_typical": ["--model", "seed-cnn", "--epochs=3", "--lr", "1e-3", "--optimizer", "adam", "--required", "x"],
        "toggles": ["--nesterov", "--json", "--required=", "--seed=0"],
        "help": ["--help"],
        "numbers": ["--epochs", "9223372036854775807", "--lr=1e309", "--momentum", "nan", "--seed", "-1", "--required", "0x10"],
        "unknown": ["--unknown", "positional"],
        "missing_value": ["--model", "x", "--epochs"],
        "toggle_with_value": ["--json=1"],
    }
    for name, arguments in lines.items():
        write("flags", name, "\n".join(arguments))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    shutil.rmtree(corpus, ignore_errors=True)
    idx_inputs()
    checkpoints(sys.argv[1])
    safetensors_inputs()
    model_spec_inputs()
    flags_inputs()


main()
