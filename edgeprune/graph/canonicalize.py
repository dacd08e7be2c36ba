"""Bring any exported model to one canonical form that every later pass can rely on.

Exporters leave Identity and Dropout nodes, Constant nodes, shape arithmetic (Shape -> Gather ->
Concat -> Reshape) and old opsets. Passes are simpler when all of that is gone: static shapes, weights
as initializers, only compute nodes, opset WORKING_OPSET.
"""
from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from edgeprune.errors import UserError
from edgeprune.graph.checks import check_structure
from edgeprune.graph.shapes import fix_input_shapes, infer_shapes

WORKING_OPSET = 17
PASS_THROUGH_OPS = {"Identity", "Dropout"}


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgrade_opset(model: onnx.ModelProto, label: str = "model") -> onnx.ModelProto:
    """Old opsets go up to WORKING_OPSET; newer ones stay (onnxruntime and TVM read them)."""
    if default_opset(model) >= WORKING_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, WORKING_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeError/ConvertError per adapter
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{label}: cannot convert opset {default_opset(model)} to {WORKING_OPSET}: {line}") from None


def remove_pass_through(graph: gs.Graph) -> int:
    """Drop Identity and inference-mode Dropout, rewiring their consumers; returns how many went."""
    removed = 0
    for node in list(graph.nodes):
        if node.op not in PASS_THROUGH_OPS or not node.inputs or any(o.outputs for o in node.outputs[1:]):
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst in graph.outputs:
            if src in graph.inputs or src in graph.outputs or isinstance(src, gs.Constant):
                continue  # an output that is a copy of an input or a weight must keep its node
            # The producer writes the graph output directly; the output keeps its public name.
            for consumer in list(src.outputs):
                if consumer is not node:
                    consumer.inputs[consumer.inputs.index(src)] = dst
            src.inputs[0].outputs[src.inputs[0].outputs.index(src)] = dst
        else:
            for consumer in list(dst.outputs):
                for i, t in enumerate(consumer.inputs):
                    if t is dst:
                        consumer.inputs[i] = src
        node.inputs.clear()
        node.outputs.clear()
        removed += 1
    graph.cleanup().toposort()
    return removed


def canonicalize(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None,
                 label: str = "model") -> onnx.ModelProto:
    """Static shapes, folded constants and shape subgraphs, no pass-through nodes, working opset."""
    check_structure(model, label)
    source = model
    model = upgrade_opset(model, label)
    if model is source:  # never edit the caller's model
        model = onnx.ModelProto()
        model.CopyFrom(source)
    fix_input_shapes(model, input_shapes or {}, label)
    model = infer_shapes(model, label)
    graph = gs.import_onnx(model)
    remove_pass_through(graph)
    graph.fold_constants(fold_shapes=True, error_ok=False).cleanup(remove_unused_graph_inputs=False).toposort()
    # Constants the folder made (and Constant nodes) become initializers on export.
    out = gs.export_onnx(graph, do_type_check=True)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.producer_name, out.producer_version = model.producer_name, model.producer_version
    del out.graph.value_info[:]
    return infer_shapes(out, label)
