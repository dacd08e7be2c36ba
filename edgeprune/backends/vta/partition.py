"""Cut a power-of-two QDQ model into VTA layers and CPU parts, in an order that runs it whole.

A VTA layer is a QDQ pattern `DequantizeLinear(int8) -> op -> QuantizeLinear(int8)` whose op VTA lowers (conv2d,
dense, residual add, max-pool, a lone ReLU), with a following `Q -> DQ -> Relu -> Q` fused in as one more
requantization stage. Scales must be powers of two with zero points 0 (`edgeprune quantize --pow2`), so every
rescale is a shift: conv/dense shift each output channel by e_y - e_x - e_w[c], an add aligns its operands with
left shifts. Every requantization rounds half to even, as onnxruntime's QuantizeLinear does, so where
onnxruntime's float arithmetic is exact (it is for these pow2 scales unless a sum passes 2^24) the integer
program gives onnxruntime's own int8 values.

Everything else (the input's QuantizeLinear, global pooling, softmax, flatten, the output's DequantizeLinear,
any layer whose attributes VTA cannot take) stays in ONNX sub-models run by onnxruntime on the board's CPU.
Steps alternate: each CPU step takes every node that is ready, each VTA step every layer that is ready.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeprune.backends.vta.config import VTAConfig
from edgeprune.backends.vta.eltwise import lower_add, lower_maxpool, reference_add, reference_maxpool
from edgeprune.backends.vta.lower import (Program, Stage, lower_conv2d, lower_dense, reference_conv2d,
                                          reference_dense)
from edgeprune.errors import UserError

_CPU_DOMAINS = ("", "ai.onnx", "com.microsoft")  # what onnxruntime runs on the board


@dataclass
class Layer:
    """One VTA program: int8 tensors in, one int8 tensor out; `params` feed both its lowering and its reference."""

    name: str
    op: str
    inputs: list[str]
    output: str
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]
    params: dict[str, Any]

    def lower(self, config: VTAConfig) -> Program:
        return _LOWER[self.op](self, config)

    def reference(self, *xs: np.ndarray) -> np.ndarray:
        """The numpy integer reference, with the exact semantics of the compiled program."""
        return _REFERENCE[self.op](self, *xs).reshape(self.out_shape)

    def describe(self) -> dict[str, Any]:
        p = self.params
        extra = {k: v for k, v in p.items() if k in ("stride", "pad", "kernel", "shift_a", "shift_b")}
        stages = [(int(np.max(s)) if np.ndim(s) else int(s), bool(r)) for s, r in p["stages"]]
        return {"name": self.name, "op": self.op, "inputs": self.inputs, "output": self.output,
                "in_shapes": [list(s) for s in self.in_shapes], "out_shape": list(self.out_shape),
                "stages": stages, **extra}


@dataclass
class CpuStep:
    model: onnx.ModelProto
    inputs: list[str]
    outputs: list[str]
    nodes: list[str]


@dataclass
class VtaStep:
    layers: list[Layer]


@dataclass
class Plan:
    steps: list[CpuStep | VtaStep]
    inputs: list[str]
    outputs: list[str]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


_LOWER: dict[str, Callable[[Layer, VTAConfig], Program]] = {
    "conv2d": lambda l, c: lower_conv2d(l.params["w"], l.params["b"], l.in_shapes[0][2:], l.params["stride"],
                                        l.params["pad"], *l.params["stages"][0], c, l.params["stages"][1:], True),
    "dense": lambda l, c: lower_dense(l.params["w"], l.params["b"], *l.params["stages"][0], c, l.params["stages"][1:],
                                      True),
    "add": lambda l, c: lower_add(l.in_shapes[0], l.params["shift_a"], l.params["shift_b"], l.params["stages"], c),
    "maxpool": lambda l, c: lower_maxpool(l.in_shapes[0], l.params["kernel"], l.params["stride"], l.params["pad"],
                                          l.params["stages"], c),
}
_REFERENCE: dict[str, Callable[..., np.ndarray]] = {
    "conv2d": lambda l, x: reference_conv2d(x, l.params["w"], l.params["b"], l.params["stride"], l.params["pad"],
                                            *l.params["stages"][0], l.params["stages"][1:], True),
    "dense": lambda l, x: reference_dense(x, l.params["w"], l.params["b"], *l.params["stages"][0],
                                          l.params["stages"][1:], True),
    "add": lambda l, a, b: reference_add(a, b, l.params["shift_a"], l.params["shift_b"], l.params["stages"]),
    "maxpool": lambda l, x: reference_maxpool(x.reshape(1, x.shape[1], *(x.shape[2:] or (1, 1))),
                                              l.params["kernel"], l.params["stride"], l.params["pad"],
                                              l.params["stages"]),
}


class _Graph:
    """Lookups over one ONNX graph: producers, consumers, constants, shapes and power-of-two exponents."""

    def __init__(self, model: onnx.ModelProto, label: str) -> None:
        self.model, self.label = model, label
        inferred = onnx.shape_inference.infer_shapes(model)
        g = inferred.graph
        self.nodes = list(model.graph.node)
        self.consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.infos = {v.name: v for v in (*g.input, *g.value_info, *g.output)}
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in model.graph.output}

    def shape(self, name: str) -> tuple[int, ...] | None:
        info = self.infos.get(name)
        if info is None or not info.type.tensor_type.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in info.type.tensor_type.shape.dim]
        return tuple(dims) if all(dims) else None

    def exponent(self, node: onnx.NodeProto) -> np.ndarray:
        """log2 of a Q/DQ node's scale (per channel or not); UserError unless power-of-two with zero point 0."""
        scale = self.consts.get(node.input[1])
        zero = self.consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1, np.int8)
        if scale is None or zero is None:
            raise UserError(f"{self.label}: node '{node.name}' has a scale or zero point that is not a constant")
        e = np.round(np.log2(scale.astype(np.float64))).astype(np.int64)
        if not np.array_equal(np.exp2(e), scale.astype(np.float64)) or np.any(zero != 0):
            raise UserError(f"{self.label}: node '{node.name}' ({node.op_type}) has scale {float(scale.ravel()[0]):g} "
                            f"and zero point {int(zero.ravel()[0])}; VTA needs power-of-two scales and zero points 0: "
                            f"quantize with `edgeprune quantize --pow2`")
        return e

    def attrs(self, node: onnx.NodeProto) -> dict[str, Any]:
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def only_consumer(self, tensor: str, op: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type == op and tensor not in self.outputs:
            return users[0]
        return None

    def act_in(self, tensor: str) -> tuple[str, int] | None:
        """(int8 tensor, exponent) behind a DequantizeLinear of an activation."""
        dq = self.producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in self.consts:
            return None
        e = self.exponent(dq)
        return (dq.input[0], int(e.ravel()[0])) if e.size == 1 else None

    def const_in(self, tensor: str) -> tuple[np.ndarray, np.ndarray, onnx.NodeProto] | None:
        """(integer constant, exponents, node) behind a DequantizeLinear of an initializer."""
        dq = self.producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in self.consts:
            return None
        return self.consts[dq.input[0]], self.exponent(dq), dq

    def q_out(self, tensor: str) -> tuple[str, int, list[onnx.NodeProto]] | None:
        """(int8 tensor, exponent, nodes) of the one QuantizeLinear to int8 a float tensor goes to."""
        q = self.only_consumer(tensor, "QuantizeLinear")
        if q is None or not self._int8(q.output[0]):
            return None
        return q.output[0], int(self.exponent(q).ravel()[0]), [q]

    def _int8(self, tensor: str) -> bool:
        info = self.infos.get(tensor)
        return info is not None and info.type.tensor_type.elem_type == onnx.TensorProto.INT8


def _square(values: list[int] | None, default: int) -> int | None:
    """The one value of a per-axis attribute, or None if the axes differ."""
    values = list(values) if values else [default]
    return values[0] if len(set(values)) == 1 else None


def _conv(g: _Graph, node: onnx.NodeProto) -> tuple[dict, list[str], list] | None:
    a = g.attrs(node)
    stride, pad = _square(a.get("strides"), 1), _square(a.get("pads"), 0)
    if a.get("group", 1) != 1 or _square(a.get("dilations"), 1) != 1 or a.get("auto_pad", b"NOTSET") not in \
            (b"NOTSET", "NOTSET") or stride is None or pad is None:
        return None
    return _gemm_like(g, node, np.asarray, {"stride": stride, "pad": pad}, "conv2d")


def _dense(g: _Graph, node: onnx.NodeProto) -> tuple[dict, list[str], list] | None:
    a = g.attrs(node)
    if node.op_type == "Gemm" and (a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0):
        return None
    transposed = node.op_type == "Gemm" and a.get("transB", 0)
    return _gemm_like(g, node, (lambda w: w) if transposed else (lambda w: w.T), {}, "dense")


def _gemm_like(g: _Graph, node: onnx.NodeProto, orient: Callable, extra: dict, op: str):
    x = g.act_in(node.input[0])
    weight = g.const_in(node.input[1]) if len(node.input) > 1 else None
    if x is None or weight is None or weight[0].dtype != np.int8:
        return None
    w = np.ascontiguousarray(orient(weight[0]))
    o = w.shape[0]
    e_w = np.broadcast_to(weight[1].ravel(), (o,)) if weight[1].size in (1, o) else None
    bias = g.const_in(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if e_w is None or (len(node.input) > 2 and node.input[2] and bias is None):
        return None
    shape_ok = (w.ndim == 4) if op == "conv2d" else (w.ndim == 2)
    if not shape_ok:
        return None
    b = bias[0].astype(np.int64) if bias is not None else np.zeros(o, np.int64)
    if bias is not None and not np.array_equal(np.broadcast_to(bias[1].ravel(), (o,)), x[1] + e_w):
        return None  # a bias at another scale would need its own shift
    return {"w": w, "b": b, "e_in": x[1], "e_w": e_w, **extra}, [x[0]], [n for n in (weight[2], bias and bias[2]) if n]


def _add(g: _Graph, node: onnx.NodeProto):
    ins = [g.act_in(t) for t in node.input]
    if any(i is None for i in ins) or g.shape(node.input[0]) != g.shape(node.input[1]):
        return None
    (a, ea), (b, eb) = ins
    return {"ea": ea, "eb": eb}, [a, b], []


def _pool(g: _Graph, node: onnx.NodeProto):
    a = g.attrs(node)
    kernel = tuple(a.get("kernel_shape", ()))
    stride, pad = _square(a.get("strides"), 1), _square(a.get("pads"), 0)
    x = g.act_in(node.input[0])
    if (x is None or len(kernel) != 2 or stride is None or pad is None or a.get("ceil_mode", 0)
            or _square(a.get("dilations"), 1) != 1 or a.get("storage_order", 0) or len(node.output) > 1
            or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
        return None
    return {"kernel": kernel, "stride": stride, "pad": pad, "e_in": x[1]}, [x[0]], []


def _relu(g: _Graph, node: onnx.NodeProto):
    x = g.act_in(node.input[0])
    return None if x is None else ({"kernel": (1, 1), "stride": 1, "pad": 0, "e_in": x[1], "relu": True}, [x[0]], [])


# ONNX op -> (layer kind, matcher returning (params, int8 inputs, constant DQ nodes) or None for the CPU).
_MATCHERS: dict[str, tuple[str, Callable]] = {
    "Conv": ("conv2d", _conv), "Gemm": ("dense", _dense), "MatMul": ("dense", _dense), "Add": ("add", _add),
    "MaxPool": ("maxpool", _pool), "Relu": ("maxpool", _relu)}


def _stages(kind: str, p: dict, e_y: int) -> tuple[list[Stage], dict]:
    """The layer's first requantization stage from the exponents."""
    if kind in ("conv2d", "dense"):
        shift = e_y - p["e_in"] - p.pop("e_w")
        if shift.min() < 0:
            return None, p
        p["b"] = p["b"].astype(np.int32)
        return [(shift if len(set(shift.tolist())) > 1 else int(shift[0]), False)], p
    if kind == "add":
        e = min(p["ea"], p["eb"])
        return [(e_y - e, False)], {"shift_a": p.pop("ea") - e, "shift_b": p.pop("eb") - e}
    return [(e_y - p.pop("e_in"), p.pop("relu", False))], p


def _fuse_relu(g: _Graph, out: str, e_y: int) -> tuple[str, Stage, list] | None:
    """`Q(out) -> DQ -> Relu -> Q` after a layer: one more stage, if nothing else reads the tensors between."""
    dq = g.only_consumer(out, "DequantizeLinear")
    relu = dq and g.only_consumer(dq.output[0], "Relu")
    q = relu and g.q_out(relu.output[0])
    if not q:
        return None
    return q[0], (q[1] - e_y, True), [dq, relu, *q[2]]


def find_layers(model: onnx.ModelProto, label: str = "model",
                config: VTAConfig = VTAConfig()) -> tuple[list[Layer], set[str], _Graph]:
    """The VTA layers of a QDQ model and the names of the nodes they replace."""
    g = _Graph(model, label)
    if not any(n.op_type == "QuantizeLinear" for n in g.nodes):
        raise UserError(f"{label}: not an int8 QDQ model; VTA runs int8 only: quantize with "
                        f"`edgeprune quantize --pow2` first")
    layers, covered = [], set()
    for node in g.nodes:
        if node.op_type not in _MATCHERS or node.name in covered:
            continue
        kind, match = _MATCHERS[node.op_type]
        found = match(g, node)
        q = found and g.q_out(node.output[0])
        if not q:
            continue
        params, inputs, const_nodes = found
        out, e_y, nodes = q
        stages, params = _stages(kind, params, e_y)
        if stages is None:
            continue
        while (relu := _fuse_relu(g, out, e_y)) is not None:
            out, stage, more = relu
            stages.append(stage)
            e_y += stage[0]
            nodes += more
        in_shapes = [g.shape(i) for i in inputs]
        out_shape = g.shape(out)
        if any(s is None or len(s) not in (2, 4) or s[0] != 1 for s in (*in_shapes, out_shape)):
            continue
        if kind == "maxpool" and len(in_shapes[0]) == 2 and params["kernel"] != (1, 1):
            continue
        layer = Layer(node.name or out, kind, inputs, out, in_shapes, out_shape, params | {"stages": stages})
        try:
            layer.lower(config)  # attributes the lowering refuses (a shape too big...) leave it on the CPU
        except UserError:
            continue
        layers.append(layer)
        covered |= {n.name for n in (node, *const_nodes, *nodes)}
    return layers, covered, g


def problems(model: onnx.ModelProto) -> dict[str, list[str]]:
    """What stops a model from compiling for VTA, as {what: node names}: ops onnxruntime lacks, a float model,
    scales that are not powers of two."""
    found: dict[str, list[str]] = {}
    model = _named(model)
    for n in model.graph.node:
        if n.domain not in _CPU_DOMAINS:
            found.setdefault(f"{n.domain}.{n.op_type} (neither VTA nor onnxruntime runs it)", []).append(n.name)
    if not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        first = next((n for n in model.graph.node if n.op_type in _MATCHERS), None)
        if first is not None:
            found[f"{first.op_type} in float (VTA runs int8: quantize with `edgeprune quantize --pow2` first)"] = \
                [first.name]
        return found
    g = _Graph(model, "model")
    for n in g.nodes:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            try:
                g.exponent(n)
            except UserError:
                scale, zero = g.consts.get(n.input[1]), g.consts.get(n.input[2]) if len(n.input) > 2 else None
                what = (f"{n.op_type} with scale {float(scale.ravel()[0]):g}" if scale is not None else n.op_type) + \
                    (f", zero point {int(zero.ravel()[0])}" if zero is not None else "") + \
                    " (VTA needs power-of-two scales and zero points 0: quantize with `edgeprune quantize --pow2`)"
                found.setdefault(what, []).append(n.name)
                return found
    return found


def partition(model: onnx.ModelProto, label: str = "model", config: VTAConfig = VTAConfig()) -> Plan:
    """Steps that run the whole model: onnxruntime sub-models and runs of VTA layers, in dependency order."""
    for n in model.graph.node:
        if n.domain not in _CPU_DOMAINS:
            raise UserError(f"{label}: node '{n.name}' is op {n.domain}.{n.op_type}, which neither VTA nor "
                            f"onnxruntime on the board runs")
    model = _named(model)
    layers, covered, g = find_layers(model, label, config)
    if not layers:
        raise UserError(f"{label}: no layer can run on VTA (it runs int8 Conv, Gemm/MatMul, Add, MaxPool and Relu "
                        f"between power-of-two QuantizeLinear/DequantizeLinear pairs)")
    # An activation's DequantizeLinear belongs to VTA if only VTA layers read it.
    layer_inputs = {i for l in layers for i in l.inputs}
    for n in g.nodes:
        users = g.consumers.get(n.output[0], []) if n.output else []
        if n.op_type == "DequantizeLinear" and n.input[0] in layer_inputs and users and \
                all(u.name in covered for u in users) and n.output[0] not in g.outputs:
            covered.add(n.name)
    cpu = [n for n in g.nodes if n.name not in covered]
    ready = {i.name for i in model.graph.input} | set(g.consts) | {""}
    steps: list[CpuStep | VtaStep] = []
    while cpu or layers:
        left = len(cpu) + len(layers)
        for kind in ("cpu", "vta"):
            batch, progress = [], True
            while progress:
                progress = False
                for item in list(cpu if kind == "cpu" else layers):
                    ins = item.input if kind == "cpu" else item.inputs
                    if all(i in ready for i in ins):
                        batch.append(item)
                        (cpu if kind == "cpu" else layers).remove(item)
                        ready |= set(item.output if kind == "cpu" else [item.output])
                        progress = True
            if batch:
                steps.append(VtaStep(batch) if kind == "vta" else batch)
        if len(cpu) + len(layers) == left:
            raise UserError(f"{label}: the graph has a cycle or an input nobody produces")
    plan = Plan([], [i.name for i in model.graph.input if i.name not in g.consts], [o.name for o in model.graph.output])
    needed_later = _needs_after(steps, plan.outputs)
    for n, step in enumerate(steps):
        plan.steps.append(_cpu_step(g, step, needed_later[n], len(plan.steps)) if isinstance(step, list) else step)
    plan.shapes = {name: g.shape(name) for name in g.infos if g.shape(name)}
    return plan


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every node with a unique name: the partition is keyed by names."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    seen: set[str] = set()
    for i, n in enumerate(copy.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)
    return copy


def _needs_after(steps: list, outputs: list[str]) -> list[set[str]]:
    """For each step, the tensors that later steps or the graph outputs read."""
    needs, later = [], set(outputs)
    for step in reversed(steps):
        needs.append(set(later))
        for item in step if isinstance(step, list) else step.layers:
            later |= set(item.input if isinstance(step, list) else item.inputs)
    return needs[::-1]


def _cpu_step(g: _Graph, nodes: list[onnx.NodeProto], needed: set[str], index: int) -> CpuStep:
    produced = {o for n in nodes for o in n.output}
    inputs = list(dict.fromkeys(i for n in nodes for i in n.input if i and i not in produced and i not in g.consts))
    outputs = [o for n in nodes for o in n.output if o in needed]
    inits = [numpy_helper.from_array(g.consts[i], i) for i in dict.fromkeys(i for n in nodes for i in n.input)
             if i in g.consts]
    graph = helper.make_graph(nodes, f"cpu{index}", [g.infos[i] for i in inputs], [g.infos[o] for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=list(g.model.opset_import))
    model.ir_version = g.model.ir_version
    onnx.checker.check_model(model)
    return CpuStep(model, inputs, outputs, [n.name for n in nodes])


def run_plan(plan: Plan, feeds: dict[str, np.ndarray],
             run_vta: Callable[[int, VtaStep, dict[str, np.ndarray]], None]) -> dict[str, np.ndarray]:
    """Run every step in order on a tensor environment; `run_vta(index, step, env)` adds a VTA step's outputs."""
    import onnxruntime as ort

    env = dict(feeds)
    for n, step in enumerate(plan.steps):
        if isinstance(step, CpuStep):
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            sess = ort.InferenceSession(step.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            env.update(zip(step.outputs, sess.run(step.outputs, {i: env[i] for i in step.inputs})))
        else:
            run_vta(n, step, env)
    return {o: env[o] for o in plan.outputs}


def reference_vta(_: int, step: VtaStep, env: dict[str, np.ndarray]) -> None:
    """VTA steps by the numpy integer reference."""
    for layer in step.layers:
        env[layer.output] = layer.reference(*(env[i] for i in layer.inputs))
