"""Tell what a PrimFunc computes from its blocks' iteration structure, never from its name.

The anchor is the one reduction block a fused function is built around; its store tells the kind: a
multiply-accumulate over a 4-d output whose weight is read as W[f, r, r, r] is a convolution (over a 3-d output,
flat.py's convolution over padded rows), over a 2-d output a matmul; an accumulation without a product (sum, max) is
pooling. No reduction at all is an elementwise tail. Integer kernels from the int8 lowering read their operands
through widening casts (int32(x_int16) * int32(w_int8)); the casts are looked through. Only float32 and int32
accumulators (32-bit lanes, what the tiles assume) get a kind other than 'other'.
"""
from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx

DATA_PAR, REDUCE = 0, 2  # tirx.IterVar kinds
ACCUMULATORS = ("float32", "int32")


@dataclass(frozen=True)
class Anchor:
    """The block a rule schedules, and for a multiply-accumulate the weight load it repacks."""

    kind: str
    block: s_tir.schedule.SBlockRV
    weight: tvm.ir.TensorLoad | None = None


def _terms(store: tirx.BufferStore) -> list[tirx.PrimExpr] | None:
    """The operands added to or maxed with the accumulator, when `store` accumulates into itself."""
    value = store.value
    if not isinstance(value, (tirx.Add, tirx.Max)):
        return None
    for acc, other in ((value.a, value.b), (value.b, value.a)):
        if isinstance(acc, tvm.ir.TensorLoad) and acc.source.same_as(store.buffer):
            return [other]
    return None


def _is_var(expr: tirx.PrimExpr, var: tirx.Var) -> bool:
    return isinstance(expr, tirx.Var) and expr.same_as(var)


def _operand(expr: tirx.PrimExpr) -> tirx.PrimExpr:
    """A product's operand without the widening cast the integer kernels put around their loads."""
    return expr.value if isinstance(expr, tirx.Cast) else expr


def _mac(store: tirx.BufferStore, block: s_tir.SBlock) -> tuple[str, tvm.ir.TensorLoad] | None:
    """(kind, weight) when the store is out += data * weight of a known shape."""
    terms = _terms(store)
    if not terms or not isinstance(store.value, tirx.Add) or not isinstance(terms[0], tirx.Mul):
        return None
    a, b = _operand(terms[0].a), _operand(terms[0].b)
    if not all(isinstance(x, tvm.ir.TensorLoad) for x in (a, b)):
        return None
    spatial = [iv.var for iv in block.iter_vars if iv.iter_type == DATA_PAR]
    reduce = [iv.var for iv in block.iter_vars if iv.iter_type == REDUCE]
    out = list(store.indices)
    if not all(any(_is_var(i, v) for v in spatial) for i in out):
        return None
    for data, weight in ((a, b), (b, a)):
        w = list(weight.indices)
        if len(out) == 4 and len(w) == 4 and len(data.indices) == 4 and len(reduce) == 3 \
                and _is_var(w[0], out[1]) and all(_is_var(i, r) for i, r in zip(w[1:], reduce)):
            depthwise = int(block.iter_vars[-3].dom.extent) == 1 and not _is_var(data.indices[1], reduce[0])
            return "depthwise" if depthwise else "conv2d", weight
        if len(out) == 3 and len(w) == 4 and len(reduce) == 3 and _is_var(w[0], out[1]) \
                and all(_is_var(i, r) for i, r in zip(w[1:], reduce)):  # flat.py's conv over padded rows
            return "flat_conv", weight
        if len(out) >= 2 and len(reduce) == 1 and len(w) == 2 and len(data.indices) == len(out) \
                and _is_var(data.indices[-1], reduce[0]) and _is_var(data.indices[-2], out[-2]) \
                and any(_is_var(w[0], a) and _is_var(w[1], b) for a, b in ((out[-1], reduce[0]), (reduce[0], out[-1]))):
            return "matmul", weight
    return None


def classify(sch: s_tir.Schedule) -> Anchor:
    """The anchor of the function being scheduled; kind 'other' when no rule should touch it."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    anchors = [b for b in blocks if any(iv.iter_type == REDUCE for iv in sch.get(b).iter_vars)]
    if not anchors:
        return Anchor("elementwise", blocks[-1])
    if len(anchors) > 1:
        return Anchor("other", anchors[0])
    block = sch.get(anchors[0])
    store = block.body
    if not isinstance(store, tirx.BufferStore) or str(store.value.ty) not in ACCUMULATORS:
        return Anchor("other", anchors[0])
    mac = _mac(store, block)
    if mac:
        return Anchor(mac[0], anchors[0], mac[1])
    terms = _terms(store)
    if terms and isinstance(terms[0], tvm.ir.TensorLoad):
        return Anchor("pool", anchors[0])
    return Anchor("other", anchors[0])
