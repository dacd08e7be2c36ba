"""Structural checks with messages that name the node, then onnx.checker and an onnxruntime session.

onnx.checker reports a cycle as "not topologically sorted" and a missing initializer deep inside a
traceback; users need to know which node, so the structural checks come first and speak plainly.
"""
from __future__ import annotations

import onnx

from edgeprune.errors import UserError

# Domains onnxruntime's CPU provider executes; a node in any other domain cannot be validated here.
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}


def node_label(node: onnx.NodeProto, index: int | None = None) -> str:
    name = node.name or (f"#{index}" if index is not None else node.output[0] if node.output else "?")
    op = f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
    return f"node '{name}' ({op})"


def check_structure(model: onnx.ModelProto, label: str = "model") -> None:
    """Every tensor has exactly one source, every domain is declared and known, and there is no cycle."""
    graph = model.graph
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    producer: dict[str, int] = {}
    for idx, node in enumerate(graph.node):
        for out in node.output:
            if out and (out in producer or out in available):
                raise UserError(f"{label}: {node_label(node, idx)} writes '{out}', which already has another source")
            if out:
                producer[out] = idx
    imported = {op.domain for op in model.opset_import} | {"ai.onnx"}
    for idx, node in enumerate(graph.node):
        if node.domain not in imported and not (node.domain == "" and "" in imported):
            raise UserError(f"{label}: {node_label(node, idx)} uses op domain '{node.domain}', which the model does not import")
        if node.domain not in KNOWN_DOMAINS:
            raise UserError(f"{label}: {node_label(node, idx)} uses unknown op domain '{node.domain}' (supported: "
                            "the ONNX standard domains and com.microsoft)")
        for name in node.input:
            if name not in available and name not in producer:
                raise UserError(f"{label}: {node_label(node, idx)} reads '{name}', which no node, graph input or "
                                "initializer provides (missing initializer?)")
    for out in graph.output:
        if out.name not in available and out.name not in producer:
            raise UserError(f"{label}: graph output '{out.name}' is produced by no node")
    _check_acyclic(graph, producer, label)


def _check_acyclic(graph: onnx.GraphProto, producer: dict[str, int], label: str) -> None:
    deps = [{producer[i] for i in n.input if i in producer} for n in graph.node]
    state = [0] * len(deps)  # 0 new, 1 on the stack, 2 done
    for root in range(len(deps)):
        stack = [(root, iter(deps[root]))]
        if state[root]:
            continue
        state[root] = 1
        while stack:
            idx, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[idx] = 2
                stack.pop()
            elif state[nxt] == 1:
                raise UserError(f"{label}: the graph has a cycle through {node_label(graph.node[nxt], nxt)}")
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(deps[nxt])))


def toposort_nodes(model: onnx.ModelProto) -> None:
    """Reorder nodes so each follows its producers (checker and runtimes require it)."""
    graph = model.graph
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    order, seen = [], set()
    for root in range(len(graph.node)):
        stack = [root]
        while stack:
            idx = stack[-1]
            if idx in seen:
                stack.pop()
                continue
            pending = [producer[i] for i in graph.node[idx].input if i in producer and producer[i] not in seen]
            if pending:
                stack.extend(pending)
            else:
                seen.add(idx)
                order.append(idx)
                stack.pop()
    nodes = [graph.node[i] for i in order]
    del graph.node[:]
    graph.node.extend(nodes)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def validate(model: onnx.ModelProto, label: str = "model", runtime: bool = True) -> None:
    """The model is well formed (structure, onnx.checker with shape inference) and onnxruntime loads it."""
    check_structure(model, label)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise UserError(f"{label}: onnx.checker rejects the model: {_first_line(exc)}") from None
    if runtime:
        from edgeprune.graph.runtime import session

        try:
            session(model)
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            raise UserError(f"{label}: onnxruntime cannot load the model: {_first_line(exc)}") from None
