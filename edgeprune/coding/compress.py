"""A model's weights to the EPHC container and back: `edgeprune compress` / `decompress`.

The folder holds `weights.ephc` (the coded tensors) and `model.onnx` (the model without them; its
metadata lists what was taken out). Coded are: the int8 weights of a QDQ model, with their scales
and zero points recorded beside them, and float tensors of few distinct values (after weight
sharing or pruning) as an exact codebook plus indices. A tensor is coded only when that makes it
smaller; everything else stays in model.onnx as it was. Decompressing gives the same bytes per tensor,
so the rebuilt model's outputs equal the compressed model's exactly. The file is made as small as the
format allows: paired streams may have compact tables, which the C decoder reads with a workspace
(ep_decode_work; `compile --coded-weights` writes its own containers without them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgeprune.coding.container import (Codebook, CodedTensor, decode_container, encode_with_stats, from_float,
                                        from_int, to_float)
from edgeprune.errors import UserError
from edgeprune.graph.io import load_model, model_bytes

WEIGHTS, SKELETON = "weights.ephc", "model.onnx"
CODED_KEY = "edgeprune.coded_tensors"  # metadata_props: comma-separated names of the tensors in weights.ephc
MAX_CODEBOOK = 1 << 16


def _affine_of(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> dict[str, tuple]:
    """int8 weight name -> (scale, zero_point, axis) from the DequantizeLinear that reads it."""
    found = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in arrays and node.input[1] in arrays:
            zero = arrays[node.input[2]] if len(node.input) > 2 and node.input[2] in arrays else 0
            scale = arrays[node.input[1]]
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1) if scale.size > 1 else None
            found[node.input[0]] = (scale, zero, axis)
    return found


def _candidate(name: str, array: np.ndarray, affine: dict) -> CodedTensor | None:
    if array.dtype == np.int8 and name in affine:
        scale, zero, axis = affine[name]
        return from_int(name, array, scale, zero, axis)
    if array.dtype == np.float32 and array.size >= 16 and np.unique(array.view(np.uint32)).size <= MAX_CODEBOOK:
        return from_float(name, array)
    return None


@dataclass
class CompressionReport:
    original_bytes: int
    compressed_bytes: int
    weights_bytes: int
    skeleton_bytes: int
    huffman_bits: int
    entropy_bits: float
    tensors: list[dict[str, Any]]

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.compressed_bytes

    def as_dict(self) -> dict[str, Any]:
        return {"original_bytes": self.original_bytes, "compressed_bytes": self.compressed_bytes,
                "ratio": self.ratio, "weights_bytes": self.weights_bytes, "skeleton_bytes": self.skeleton_bytes,
                "huffman_bits": self.huffman_bits, "entropy_bits": self.entropy_bits, "tensors": self.tensors}


def compress(model: onnx.ModelProto) -> tuple[bytes, onnx.ModelProto, CompressionReport]:
    """(container bytes, model without the coded tensors, report)."""
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    affine = _affine_of(model, arrays)
    coded = []
    for name, array in arrays.items():
        tensor = _candidate(name, array, affine)
        if tensor is None:
            continue
        _, (stat,) = encode_with_stats([tensor], work_limit=None)
        if stat.record_bytes < array.nbytes:  # with tables of its own: sharing them only makes it smaller
            coded.append(tensor)
    container, stats = encode_with_stats(coded, work_limit=None) if coded else (b"", [])
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    names = {t.name for t in coded}
    kept = [i for i in skeleton.graph.initializer if i.name not in names]
    del skeleton.graph.initializer[:]
    skeleton.graph.initializer.extend(kept)
    skeleton.metadata_props.append(onnx.StringStringEntryProto(key=CODED_KEY, value=",".join(t.name for t in coded)))
    skeleton_size = len(model_bytes(skeleton))
    report = CompressionReport(
        original_bytes=len(model_bytes(model)), compressed_bytes=len(container) + skeleton_size,
        weights_bytes=len(container), skeleton_bytes=skeleton_size,
        huffman_bits=sum(s.huffman_bits for s in stats), entropy_bits=sum(s.entropy_bits for s in stats),
        tensors=[{"name": s.name, "coding": s.coding, "elements": s.n_elements, "raw_bytes": int(arrays[s.name].nbytes),
                  "coded_bytes": s.record_bytes, "bits_per_weight": s.huffman_bits / max(s.n_elements, 1),
                  "entropy_bits_per_weight": s.entropy_bits / max(s.n_elements, 1),
                  "streams": [{"table": table, "huffman_bits": bits} for table, bits in s.streams]} for s in stats])
    return container, skeleton, report


def decompress(container: bytes, skeleton: onnx.ModelProto, label: str = WEIGHTS) -> onnx.ModelProto:
    """The model with every coded tensor back, bit for bit."""
    listed = next((p.value for p in skeleton.metadata_props if p.key == CODED_KEY), None)
    if listed is None:
        raise UserError(f"{label}: the model beside it was not written by `edgeprune compress` (no {CODED_KEY})")
    expected = [n for n in listed.split(",") if n]
    tensors = decode_container(container, label) if expected else []
    if [t.name for t in tensors] != expected:
        raise UserError(f"{label}: holds tensors {[t.name for t in tensors]}, the model expects {expected}")
    model = onnx.ModelProto()
    model.CopyFrom(skeleton)
    del model.metadata_props[:]
    model.metadata_props.extend(p for p in skeleton.metadata_props if p.key != CODED_KEY)
    for t in tensors:
        # Shared floats come back through their codebook; int8 weights stay int8 behind their DequantizeLinear.
        value = to_float(t) if isinstance(t.quant, Codebook) else t.values
        model.graph.initializer.append(numpy_helper.from_array(value, t.name))
    return model


def compress_to_folder(model_path: str | Path, out_dir: Path) -> CompressionReport:
    container, skeleton, report = compress(load_model(model_path))
    (out_dir / WEIGHTS).write_bytes(container)
    (out_dir / SKELETON).write_bytes(model_bytes(skeleton))
    return report


def decompress_folder(folder: str | Path) -> onnx.ModelProto:
    folder = Path(folder)
    for name in (WEIGHTS, SKELETON):
        if not (folder / name).is_file():
            raise UserError(f"{folder}: no {name} (not a folder written by `edgeprune compress`)")
    return decompress((folder / WEIGHTS).read_bytes(), load_model(folder / SKELETON), str(folder / WEIGHTS))
