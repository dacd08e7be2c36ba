"""Load and save ONNX models, turning every way a file can be wrong into one clear line."""
from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from edgeprune.errors import UserError

# Protobuf cannot serialize a message over 2 GB: above this, weights go to an external file.
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2


def load_model(source: str | os.PathLike | bytes, name: str | None = None) -> onnx.ModelProto:
    """Parse an ONNX model from a path (external data resolved beside it) or from bytes."""
    if isinstance(source, (bytes, bytearray)):
        label, data, base = name or "<bytes>", bytes(source), None
    else:
        path = Path(source)
        label = name or str(path)
        if not path.exists():
            raise UserError(f"{label}: no such file")
        if path.is_dir():
            if (path / "weights.ephc").is_file():  # a folder written by `edgeprune compress`: decoded bit for bit
                from edgeprune.coding.compress import decompress_folder

                return decompress_folder(path)
            raise UserError(f"{label}: is a folder, not an ONNX file (nor a folder written by `edgeprune compress`)")
        data, base = path.read_bytes(), path.parent
    if not data:
        raise UserError(f"{label}: empty file, not an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise UserError(f"{label}: not a valid ONNX model (protobuf parse failed: {exc})") from None
    if not model.HasField("graph") or not model.graph.output:
        raise UserError(f"{label}: not a valid ONNX model (no graph or no graph outputs; truncated file?)")
    if base is not None and _uses_external_data(model):
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(base))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise UserError(f"{label}: external weight data missing: {exc}") from None
    return model


def _uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write a model; weights go to `<name>.data` beside it when the protobuf would pass 2 GB."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def model_bytes(model: onnx.ModelProto) -> bytes:
    """Deterministic serialization: equal models give equal bytes, so bundles are reproducible."""
    return model.SerializeToString(deterministic=True)
