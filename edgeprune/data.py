"""Calibration and evaluation data: `.npz` with one array per model input, and `labels` if known.

Arrays carry the samples on axis 0. A model whose batch dim is 1 gets the samples one at a time,
so one file serves models with any fixed batch size that divides the sample count. A model with
flat 2-D input (an MLP) takes image arrays flattened per sample, as a Flatten layer would.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnx

from edgeprune.errors import UserError
from edgeprune.graph.runtime import graph_inputs, input_spec, random_inputs

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
