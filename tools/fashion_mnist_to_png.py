#!/usr/bin/env python3
"""Fashion-MNIST's IDX files as an image folder that `ember train --data DIR` reads:

    DIR/train/<class>/NNNNN.png   DIR/test/<class>/NNNNN.png

NNNNN is the image's index in its IDX file; <class> is "<label>-<name>" (0-t-shirt-top,
1-trouser, ...), so the sorted folder names give each class the IDX label it had.
PNGs are 8-bit grey, written with zlib and struct (no imaging library needed).

    tools/fashion_mnist_to_png.py OUT_DIR [--source /usr/share/datasets/fashion-mnist] [--limit N]
"""
import argparse
import gzip
import os
import struct
import sys
import zlib

CLASSES = ["t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def read_idx(path):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, kind, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != 8:
        sys.exit(f"{path}: not an IDX file of unsigned bytes")
    dims = struct.unpack(">" + "I" * rank, data[4:4 + 4 * rank])
    return dims, data[4 + 4 * rank:]


def png_bytes(pixels, height, width):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff)
    rows = b"".join(b"\x00" + pixels[r * width:(r + 1) * width] for r in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def find(source, stem):
    for name in (stem + ".gz", stem):
        if os.path.exists(os.path.join(source, name)):
            return os.path.join(source, name)
    sys.exit(f"{source}: no {stem} or {stem}.gz")


def convert(source, out, split, prefix, limit):
    (count, height, width), images = read_idx(find(source, prefix + "-images-idx3-ubyte"))
    (label_count,), labels = read_idx(find(source, prefix + "-labels-idx1-ubyte"))
    if label_count != count:
        sys.exit(f"{source}: {count} {prefix} images but {label_count} labels")
    count = min(count, limit) if limit else count
    for name in CLASSES:
        os.makedirs(os.path.join(out, split, f"{CLASSES.index(name)}-{name}"), exist_ok=True)
    size = height * width
    for i in range(count):
        label = labels[i]
        path = os.path.join(out, split, f"{label}-{CLASSES[label]}", f"{i:05d}.png")
        with open(path, "wb") as f:
            f.write(png_bytes(images[i * size:(i + 1) * size], height, width))
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the folder to write (train/ and test/ inside)")
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist", help="folder of the IDX files")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images of each split (0: all)")
    args = parser.parse_args()
    for split, prefix in (("train", "train"), ("test", "t10k")):
        n = convert(args.source, args.out, split, prefix, args.limit)
        print(f"{args.out}/{split}: {n} images")


if __name__ == "__main__":
    main()
