"""Calibration and evaluation data: `.npz` with one array per model input (and `labels` if known), or a
folder of images for a single image input.

Arrays carry the samples on axis 0. A model whose batch dim is 1 gets the samples one at a time,
so one file serves models with any fixed batch size that divides the sample count. A model with
flat 2-D input (an MLP) takes image arrays flattened per sample, as a Flatten layer would.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeprune.errors import UserError
from edgeprune.graph.runtime import graph_inputs, input_spec, random_inputs
from edgeprune.tomlcheck import check_table, read_toml

Samples = list[dict[str, np.ndarray]]


def load_npz(path: str | Path, model: onnx.ModelProto) -> tuple[Samples, np.ndarray | None]:
    """Split an .npz into per-run feeds matching the model's (static) input shapes."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--calib {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"--calib {path}: not a readable .npz file ({exc})") from None
    labels = arrays.pop("labels", None)
    feeds_per_input = {}
    count = None
    for value in graph_inputs(model):
        dims, dtype = input_spec(value)
        if value.name not in arrays:
            raise UserError(f"--calib {path}: no array named '{value.name}' (has: {', '.join(arrays) or 'none'})")
        arr = arrays[value.name]
        batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1  # a symbolic batch runs one at a time
        fixed = [d if isinstance(d, int) and d > 0 else None for d in dims[1:]]
        if len(dims) == 2 and fixed[0] and arr.ndim > 2 and int(np.prod(arr.shape[1:])) == fixed[0]:
            arr = arr.reshape(arr.shape[0], -1)  # images into a flat model (an MLP), row-major like Flatten
        if arr.ndim != len(dims) or any(f is not None and f != a for f, a in zip(fixed, arr.shape[1:])):
            raise UserError(f"--calib {path}: array '{value.name}' has shape {list(arr.shape)}, "
                            f"the model's input is {dims} (samples go on axis 0)")
        if arr.shape[0] % batch:
            raise UserError(f"--calib {path}: {arr.shape[0]} samples of '{value.name}' do not split into batches of {batch}")
        feeds_per_input[value.name] = arr.astype(dtype, copy=False).reshape(-1, batch, *arr.shape[1:])
        runs = feeds_per_input[value.name].shape[0]
        if count is not None and runs != count:
            raise UserError(f"--calib {path}: inputs hold different sample counts ({count} vs {runs})")
        count = runs
    if count is None or count == 0:
        raise UserError(f"--calib {path}: holds no samples")
    samples = [{name: arr[i] for name, arr in feeds_per_input.items()} for i in range(count)]
    return samples, labels


def random_samples(model: onnx.ModelProto, count: int = 2, seed: int = 0) -> Samples:
    """Seeded stand-in inputs when the user gave none: enough to catch a wrong rewrite, not to calibrate."""
    return [random_inputs(model, seed=seed + i) for i in range(count)]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# preprocess.toml keys beside the images -> (type, default, allowed); README "Calibration data" documents them.
PREPROCESS: dict[str, tuple[Any, Any, tuple | None]] = {
    "resize": (str, "shorter-side", ("shorter-side", "stretch")),  # resize, then center crop; or stretch
    "scale": (float, 1 / 255, None),    # pixel values (0..255) are multiplied by this first
    "mean": (list[float], [0.0], None),  # then (value - mean) / std per channel; one value for all channels
    "std": (list[float], [1.0], None),
    "layout": (str, "auto", ("NCHW", "NHWC", "auto")),  # auto: channels where the dim is 1 or 3
}


def load_calibration(path: str | Path, model: onnx.ModelProto) -> tuple[Samples, np.ndarray | None]:
    """`--calib` takes an `.npz` file or a folder of images; both give per-run feeds and optional labels."""
    return load_image_folder(path, model) if Path(path).is_dir() else load_npz(path, model)


def _preprocess_options(folder: Path) -> dict[str, Any]:
    options = {key: default for key, (_, default, _) in PREPROCESS.items()}
    file = folder / "preprocess.toml"
    if file.is_file():
        data = read_toml(file)
        check_table(data, {key: (typ, False, allowed) for key, (typ, _, allowed) in PREPROCESS.items()}, str(file))
        options |= data
    return options


def _image_layout(dims: list, layout: str, where: str) -> tuple[str, int, int, int]:
    """(layout, channels, height, width) of a 4-D image input with static C, H and W."""
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        raise UserError(f"{where}: an image folder needs one 4-D input with static C, H, W; the model's is {dims}")
    if layout == "auto":
        layout = "NCHW" if dims[1] in (1, 3) else "NHWC" if dims[3] in (1, 3) else ""
        if not layout:
            raise UserError(f"{where}: cannot tell the channel axis of input {dims}; set layout in preprocess.toml")
    c, h, w = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
    if c not in (1, 3):
        raise UserError(f"{where}: an image folder feeds 1 or 3 channels; the model's input has {c}")
    return layout, c, h, w


def _read_image(file: Path, c: int, h: int, w: int, resize: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            img = img.convert("L" if c == 1 else "RGB")
            if resize == "shorter-side":
                k = max(h / img.height, w / img.width)
                size = (max(w, round(img.width * k)), max(h, round(img.height * k)))
                img = img.resize(size, Image.Resampling.BILINEAR)
                left, top = (img.width - w) // 2, (img.height - h) // 2
                img = img.crop((left, top, left + w, top + h))
            else:
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"--calib {file}: not a readable image ({exc})") from None
    return pixels.reshape(h, w, c)


def load_image_folder(path: str | Path, model: onnx.ModelProto) -> tuple[Samples, np.ndarray | None]:
    """Images in a folder (or in one subfolder per class, which become `labels` in sorted order)."""
    folder = Path(path)
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise UserError(f"--calib {folder}: reading images needs Pillow: pip install 'edgeprune[images]'") from None
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise UserError(f"--calib {folder}: an image folder feeds one input; the model has {len(inputs)} (use an .npz)")
    dims, dtype = input_spec(inputs[0])
    options = _preprocess_options(folder)
    layout, c, h, w = _image_layout(list(dims), options["layout"], f"--calib {folder}")
    classes = sorted(d for d in folder.iterdir() if d.is_dir())
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    labelled = [(f, k) for k, d in enumerate(classes) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if files and labelled:
        raise UserError(f"--calib {folder}: holds both images and class subfolders; use one or the other")
    entries = labelled or [(f, -1) for f in files]
    if not entries:
        raise UserError(f"--calib {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    mean, std = (np.asarray(options[k], dtype=np.float32) for k in ("mean", "std"))
    for key, arr in (("mean", mean), ("std", std)):
        if arr.size not in (1, c):
            raise UserError(f"--calib {folder}/preprocess.toml: {key} needs 1 or {c} values, has {arr.size}")
    if np.any(std == 0):
        raise UserError(f"--calib {folder}/preprocess.toml: std must not be 0")
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1
    if len(entries) % batch:
        raise UserError(f"--calib {folder}: {len(entries)} images do not split into batches of {batch}")
    images = np.stack([(_read_image(f, c, h, w, options["resize"]) * options["scale"] - mean) / std for f, _ in entries])
    if layout == "NCHW":
        images = images.transpose(0, 3, 1, 2)
    runs = images.astype(dtype).reshape(-1, batch, *images.shape[1:])
    labels = np.array([k for _, k in entries], dtype=np.int64) if labelled else None
    return [{inputs[0].name: run} for run in runs], labels
