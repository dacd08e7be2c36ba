"""Run models in onnxruntime, the numerical reference, and compare two models' outputs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from edgeprune.errors import UserError

_NP_DTYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.BOOL: np.bool_,
}


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Inputs that need a feed: initializers listed as inputs (old exporters) are not among them."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def input_spec(value: onnx.ValueInfoProto) -> tuple[list[int | str], type]:
    """Shape (ints, or the dim_param name of a symbolic dim) and numpy dtype of a graph input."""
    ttype = value.type.tensor_type
    dims: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in ttype.shape.dim]
    if ttype.elem_type not in _NP_DTYPES:
        raise UserError(f"input '{value.name}': element type {onnx.TensorProto.DataType.Name(ttype.elem_type)} is not supported")
    return dims, _NP_DTYPES[ttype.elem_type]


def random_inputs(model: onnx.ModelProto, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Reproducible inputs for a model with static input shapes (floats ~N(0,1), ints small)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in graph_inputs(model):
        dims, dtype = input_spec(value)
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            raise UserError(f"input '{value.name}' has a dynamic shape {dims}: give it with --input-shape {value.name}=...")
        shape = [batch if i == 0 and len(dims) > 1 else d for i, d in enumerate(dims)] if batch != 1 else dims
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[value.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[value.name] = rng.integers(0, 8, shape).astype(dtype)
    return feeds


def session(model: onnx.ModelProto, optimize: bool = False):
    """An onnxruntime CPU session; graph optimizations off by default so we test the graph we wrote."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], sess=None) -> dict[str, np.ndarray]:
    """Outputs by name; pass a session to avoid rebuilding it for each batch."""
    sess = sess or session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


@dataclass
class Difference:
    """How far a model's outputs moved from a reference's, over all outputs and samples."""

    max_abs: float
    mean_abs: float
    top1_agreement: float | None  # fraction of samples whose argmax agrees; None if no classifier-like output

    def as_dict(self) -> dict:
        return {"max_abs_error": self.max_abs, "mean_abs_error": self.mean_abs, "top1_agreement": self.top1_agreement}


def compare_outputs(ref: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> Difference:
    """Max/mean abs error over every output both have; top-1 over the first 2-D float output."""
    common = [k for k in ref if k in new]
    if not common:
        raise UserError("the two models share no output name to compare")
    max_abs, total, count, top1 = 0.0, 0.0, 0, None
    for name in common:
        a, b = np.asarray(ref[name], np.float64), np.asarray(new[name], np.float64)
        if a.shape != b.shape:
            raise UserError(f"output '{name}': shapes differ, {a.shape} vs {b.shape}")
        d = np.abs(a - b)
        if d.size:
            max_abs = max(max_abs, float(np.nanmax(d)) if not np.isnan(d).all() else float("nan"))
            total, count = total + float(d.sum()), count + d.size
        if top1 is None and a.ndim == 2 and a.shape[1] > 1:
            top1 = float(np.mean(a.argmax(1) == b.argmax(1)))
    return Difference(max_abs, total / max(count, 1), top1)


def compare_models(ref: onnx.ModelProto, new: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> Difference:
    """Run both models on the same feeds and measure the difference."""
    return compare_outputs(run(ref, feeds), run(new, feeds))


def top1_accuracy(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]], labels: np.ndarray) -> float:
    """Fraction of samples whose first output's argmax equals the label (samples in label order)."""
    sess = session(model)
    first = sess.get_outputs()[0].name
    predictions = np.concatenate([run(model, feeds, sess)[first].reshape(-1, sess.get_outputs()[0].shape[-1]).argmax(1)
                                  for feeds in samples])
    labels = np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape:
        raise UserError(f"labels: {labels.size} labels for {predictions.size} predictions")
    return float(np.mean(predictions == labels))
