"""What a back end compiles: an ONNX model after the passes, or a TFLite model as it is.

Each source knows its inputs and outputs, how to import itself into TVM Relax, and which runtime is
its numerical reference (onnxruntime for ONNX, ai-edge-litert for TFLite), so back ends and bundle
checks are written once for both.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeprune.errors import UserError
from edgeprune.graph.io import model_bytes
from edgeprune.graph.runtime import graph_inputs, input_spec, random_inputs, run

TFLITE_MAGIC = b"TFL3"


def is_tflite(path: str | Path) -> bool:
    path = Path(path)
    if path.suffix.lower() == ".tflite":
        return True
    try:
        with path.open("rb") as f:
            return f.read(8)[4:8] == TFLITE_MAGIC
    except OSError:
        return False


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass
class OnnxSource:
    model: onnx.ModelProto
    filename: str = "model.onnx"
    reference_name: str = "onnxruntime"

    def data(self) -> bytes:
        return model_bytes(self.model)

    def inputs(self) -> list[dict[str, Any]]:
        return [_spec(v.name, *input_spec(v)) for v in graph_inputs(self.model)]

    def outputs(self) -> list[dict[str, Any]]:
        return [_spec(v.name, *input_spec(v)) for v in self.model.graph.output]

    def random_feeds(self, seed: int) -> dict[str, np.ndarray]:
        return random_inputs(self.model, seed=seed)

    def reference(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run(self.model, feeds)

    def relax_module(self, label: str = "model"):
        from edgeprune.compile.tvm_build import import_onnx

        return import_onnx(self.model, label)


@dataclass
class TfliteSource:
    """A .tflite flatbuffer, compiled through TVM's TFLite frontend and checked against ai-edge-litert."""

    buffer: bytes
    label: str = "model.tflite"
    filename: str = "model.tflite"
    reference_name: str = "tflite (ai-edge-litert)"

    @classmethod
    def load(cls, path: str | Path) -> "TfliteSource":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        buffer = path.read_bytes()
        if buffer[4:8] != TFLITE_MAGIC:
            raise UserError(f"{path}: not a TFLite model (no TFL3 identifier)")
        source = cls(buffer, str(path))
        source._interpreter()  # parse now, so a broken file fails here with its name
        return source

    def _interpreter(self):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise UserError("TFLite models need the tflite extra: pip install 'edgeprune[tflite]'") from None
        try:
            interpreter = Interpreter(model_content=self.buffer)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"{self.label}: ai-edge-litert cannot load it: {_first_line(exc)}") from None
        return interpreter

    def data(self) -> bytes:
        return self.buffer

    def inputs(self) -> list[dict[str, Any]]:
        return [_spec(d["name"], [int(x) for x in d["shape"]], d["dtype"]) for d in self._interpreter().get_input_details()]

    def outputs(self) -> list[dict[str, Any]]:
        return [_spec(d["name"], [int(x) for x in d["shape"]], d["dtype"]) for d in self._interpreter().get_output_details()]

    def random_feeds(self, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        feeds = {}
        for spec in self.inputs():
            dtype = np.dtype(spec["dtype"])
            if np.issubdtype(dtype, np.floating):
                feeds[spec["name"]] = rng.random(spec["shape"]).astype(dtype)  # image-like [0, 1)
            else:
                info = np.iinfo(dtype)
                feeds[spec["name"]] = rng.integers(info.min, info.max, spec["shape"], endpoint=True).astype(dtype)
        return feeds

    def reference(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interpreter = self._interpreter()
        for d in interpreter.get_input_details():
            interpreter.set_tensor(d["index"], feeds[d["name"]])
        interpreter.invoke()
        return {d["name"]: interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()}

    def relax_module(self, label: str = "model"):
        import tflite
        from tvm import relax
        from tvm.relax.frontend.tflite import from_tflite

        try:
            mod = from_tflite(tflite.Model.GetRootAsModel(self.buffer, 0))
        except Exception as exc:  # the frontend raises NotImplementedError/OpNotImplemented/asserts per op
            raise UserError(f"{self.label}: TVM's TFLite import failed: {_first_line(exc)}") from None
        return relax.transform.DecomposeOpsForInference()(mod)


def _spec(name: str, shape: list, dtype) -> dict[str, Any]:
    return {"name": name, "shape": list(shape), "dtype": np.dtype(dtype).name}


Source = OnnxSource | TfliteSource


def load_source(path: str | Path) -> Source:
    """A bundle's or user's model file as a source, by its content."""
    if is_tflite(path):
        return TfliteSource.load(path)
    from edgeprune.graph.io import load_model

    return OnnxSource(load_model(path))
