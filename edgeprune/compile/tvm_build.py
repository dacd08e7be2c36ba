"""ONNX -> TVM Relax -> compiled executable: the build every back end shares.

Weights are bound into the module as constants (keep_params_in_input=False), so the exported
library is the whole model and the device needs nothing else.
"""
from __future__ import annotations

from functools import lru_cache

import onnx

from edgeprune.compile.integer import lower_integer
from edgeprune.errors import UserError
from edgeprune.graph.runtime import graph_inputs, input_spec
from edgeprune.targets import Target


@lru_cache(maxsize=1)
def frontend_ops() -> frozenset[str]:
    """Op types TVM's ONNX frontend converts (its converter table is the only list there is)."""
    from tvm.relax.frontend.onnx import onnx_frontend

    return frozenset(onnx_frontend._get_convert_map())


def unsupported_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Op type -> node names TVM's ONNX import cannot take (empty when all convert)."""
    known = frontend_ops()
    missing: dict[str, list[str]] = {}
    for idx, node in enumerate(model.graph.node):
        if node.op_type not in known or node.domain not in ("", "ai.onnx"):
            missing.setdefault(node.op_type, []).append(node.name or f"#{idx}")
    return missing


def import_onnx(model: onnx.ModelProto, label: str = "model"):
    """A Relax IRModule for a canonical (static-shape) model, decomposed for inference."""
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    for op, nodes in unsupported_ops(model).items():
        raise UserError(f"{label}: TVM cannot compile op {op} (node '{nodes[0]}'"
                        f"{f' and {len(nodes) - 1} more' if len(nodes) > 1 else ''})")
    shapes = {v.name: input_spec(v)[0] for v in graph_inputs(model)}
    for name, dims in shapes.items():
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise UserError(f"{label}: input '{name}' has dynamic dims {dims}: give --input-shape {name}=...")
    try:
        mod = from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    except Exception as exc:  # the frontend raises bare errors naming the op; keep the first line
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{label}: TVM's ONNX import failed: {line}") from None
    mod = relax.transform.DecomposeOpsForInference()(mod)
    return lower_integer(mod)[0]  # QDQ models: int8 arithmetic instead of float between dequantize/quantize


def build(model: onnx.ModelProto, target: Target, label: str = "model"):
    """Compile an ONNX model for the target; returns TVM's executable (export with the back end's compiler)."""
    return build_module(import_onnx(model, label), target)


def build_module(mod, target: Target):
    """Compile a Relax module (from any frontend) for the target."""
    import tvm

    from edgeprune.compile.schedules import pipeline

    return tvm.compile(mod, target=target.tvm_target(), relax_pipeline=pipeline(target))
