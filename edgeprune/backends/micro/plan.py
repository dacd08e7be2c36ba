"""A Relax module -> a flat, statically planned program: tensors, constants and kernel calls in order.

TVM 0.27 has no AOT executor, so we stop the Relax pipeline after CallTIRRewrite (every kernel call
writes into an explicit `alloc_tensor`) and read `main` as a straight line of steps. What a binding
means is decided by the table BINDINGS, keyed by the callee; anything else is an op the micro back
end cannot lower, refused with its name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeprune.errors import UserError

# Relax passes up to explicit allocations, without the VM lowering (which rejects the C target).
RELAX_PASSES = ("LegalizeOps", "AnnotateTIROpPattern", "FoldConstant", "FuseOps", "FuseTIR", "DeadCodeElimination",
                "RewriteDataflowReshape", "ToNonDataflow", "RemovePurityChecking", "CallTIRRewrite")


@dataclass
class Tensor:
    """A value of the program: a model input, a constant, an arena buffer or the caller's output."""

    index: int
    shape: tuple[int, ...]
    dtype: str
    role: str  # "input" | "const" | "arena" | "output"
    io_index: int = -1  # position among inputs/outputs
    value: np.ndarray | None = None
    coded: bytes | None = None  # a const kept Huffman-coded in flash (an EPHC container), decoded per call

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Call:
    kernel: str
    args: list[int]  # tensor indices, the last ones written


@dataclass
class Program:
    tensors: list[Tensor] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)  # tensor index of each model output


def relax_lower(mod):
    """The Relax passes of RELAX_PASSES, under the C target."""
    import tvm
    from tvm import relax

    with tvm.target.Target({"kind": "c"}):
        return tvm.transform.Sequential([getattr(relax.transform, name)() for name in RELAX_PASSES])(mod)


def _shape_dtype(expr) -> tuple[tuple[int, ...], str]:
    info = expr.ty
    values = getattr(info.shape, "values", None)
    if values is None or not all(hasattr(d, "value") for d in values):
        raise UserError("micro: a tensor of unknown shape cannot live in a static arena")
    return tuple(int(d) for d in values), str(info.dtype)


def _is_constant(expr) -> bool:
    import tvm

    return isinstance(expr, tvm.ir.expr.GenericConst)


class _Reader:
    """Walks `main`, mapping each Relax variable to a tensor index."""

    def __init__(self, func):
        self.program = Program()
        self.var: dict = {}
        for i, param in enumerate(func.params):
            self.var[param] = self._new(*_shape_dtype(param), "input", io_index=i)

    def _new(self, shape, dtype, role, **kw) -> int:
        self.program.tensors.append(Tensor(len(self.program.tensors), shape, dtype, role, **kw))
        return len(self.program.tensors) - 1

    def operand(self, expr) -> int:
        from tvm import relax

        if isinstance(expr, relax.Var):
            return self.var[expr]
        if _is_constant(expr):
            value = expr.value.numpy()
            return self._new(value.shape, str(value.dtype), "const", value=value)
        raise UserError(f"micro: cannot pass {type(expr).__name__} to a kernel (only tensors and constants)")

    # handlers of BINDINGS: (reader, bound var, call) -> tensor index of the var, or None
    def alloc(self, var, call) -> int:
        return self._new(*_shape_dtype(var), "arena")

    def alias(self, var, call) -> int:
        return self.operand(call.args[0])

    def kernel(self, var, call) -> None:
        self.program.calls.append(Call(call.op.name_hint, [self.operand(a) for a in call.args]))


BINDINGS = {
    "relax.builtin.alloc_tensor": _Reader.alloc,
    "relax.reshape": _Reader.alias,  # same bytes, another shape: a pointer alias
}


def read_program(mod) -> Program:
    """The planned `main` of a lowered module as a Program; refuses what it cannot run statically."""
    import tvm
    from tvm import relax

    func = mod["main"]
    reader = _Reader(func)
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Var) or _is_constant(value):
                reader.var[binding.var] = reader.operand(value)
            elif isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
                reader.kernel(binding.var, value)
            elif isinstance(value, relax.Call) and value.op.name in BINDINGS:
                reader.var[binding.var] = BINDINGS[value.op.name](reader, binding.var, value)
            elif isinstance(value, relax.TupleGetItem) and value.tuple_value in reader.var:
                reader.var[binding.var] = reader.var[value.tuple_value][value.index]
            elif isinstance(value, relax.Tuple):
                reader.var[binding.var] = [reader.operand(f) for f in value.fields]
            else:
                what = value.op.name if isinstance(value, relax.Call) else type(value).__name__
                raise UserError(f"micro: cannot lower '{what}' to C (no static kernel for it)")
    result = func.body.body
    fields = result.fields if isinstance(result, relax.Tuple) else [result]
    outs = []
    for f in fields:
        index = reader.operand(f)
        outs.extend(index if isinstance(index, list) else [index])
    program = reader.program
    for k, index in enumerate(outs):
        tensor = program.tensors[index]
        if tensor.role != "arena":
            raise UserError(f"micro: model output {k} is an input or a constant; nothing to compute")
        tensor.role, tensor.io_index = "output", k
    if len(set(outs)) != len(outs):
        raise UserError("micro: two model outputs are the same tensor; give each its own node")
    program.outputs = outs
    return program
