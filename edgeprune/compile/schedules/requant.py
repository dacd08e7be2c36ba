"""The int8 requantization in float64 where that is exact: the same numbers in a fifth of the instructions.

The integer lowering (compile/integer.py) requantizes an int32 accumulator as
round_half_even(int64(acc) * m0 / 2^sh): an int64 multiply, variable arithmetic shifts and int64 clips,
none of which AVX2 has (LLVM emulates each; measured: 11 instructions per output, three times the
multiply-adds of a 3x3 depthwise conv). When |acc * m0| < 2^53 the product is exact in float64, and so is
its scaling by 2^-sh, so round(float64(acc) * (m0 * 2^-sh)) (round is ties-to-even) gives the same integer:
four vector instructions per 4 outputs. The bound comes from the constant weights: the data is
int16(x) - zx with |x - zx| <= 255, so |acc| <= 255 * sum|w| + |bias| per output channel. Layers where it
does not hold keep the int64 form.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

EXACT = 2**53  # float64 integers are exact below this
DATA_MAX = 255  # |int16(x_int8) - zero point|


def _value(expr) -> np.ndarray | None:
    """A constant, looking through the reshape/permute the lowering puts around biases and matmul weights."""
    if isinstance(expr, tvm.ir.expr.GenericConst):
        return expr.value.numpy()
    if isinstance(expr, relax.Call) and expr.op.name in ("relax.reshape", "relax.permute_dims"):
        inner = _value(expr.args[0])
        if inner is None:
            return None
        return inner.reshape([int(d) for d in expr.ty.shape]) if expr.op.name == "relax.reshape" \
            else inner.transpose([int(a) for a in expr.attrs.axes])
    return None


def _acc_bound(weight, conv: bool, bias) -> np.ndarray | None:
    """max |acc| per output channel, from the weights (and bias) of a conv2d (OIHW) or matmul (K x N)."""
    weight = _value(weight)
    if weight is None:
        return None
    weight = np.abs(weight.astype(np.int64))
    per_channel = weight.reshape(weight.shape[0], -1).sum(1) if conv else weight.sum(-2).reshape(-1)
    bound = DATA_MAX * per_channel
    if bias is not None:
        b = _value(bias)
        if b is None:
            return None
        bound = bound + np.abs(b.astype(np.int64)).reshape(-1)
    return bound


def float64_requant() -> tvm.transform.Pass:
    """The pass: int64 requantization chains the weights bound are rewritten to float64 ones."""
    if tvm.ir.Op.get("tirx.nearbyint").get_attr("TVectorizable") is None:
        # round() legalizes to nearbyint, which TVM 0.27 does not mark vectorizable: a vectorized store loop
        # holding it is scalarized whole (measured: the 144x56x56 depthwise layer 0.51 -> 0.38 ms once marked)
        tvm.ir.register_op_attr("tirx.nearbyint", "TVectorizable", True)
    kernel, matrix, bias = is_const(), wildcard(), wildcard()
    conv, matmul = is_op("relax.nn.conv2d")(wildcard(), kernel), is_op("relax.matmul")(wildcard(), matrix)
    acc = conv | matmul | is_op("relax.add")(conv | matmul, bias)
    m0, shift, half, zero = is_const(), is_const(), is_const(), is_const()
    widened = is_op("relax.astype")(acc)
    scaled = is_op("relax.multiply")(widened, m0)
    odd = is_op("relax.bitwise_and")(is_op("relax.right_shift")(scaled, shift), is_const())
    rounded = is_op("relax.right_shift")(is_op("relax.add")(is_op("relax.add")(scaled, half), odd), shift)
    clip = is_op("relax.clip")(is_op("relax.add")(rounded, zero), wildcard(), wildcard())
    pattern = is_op("relax.astype")(clip)

    def rewrite(call: relax.Call, matches: dict) -> relax.Expr:
        lo, hi = (int(v.value) for v in matches[clip].args[1:])
        m = matches[m0].value.numpy()
        sh = matches[shift].value.numpy()
        weight = matches[kernel] if kernel in matches else matches[matrix]
        bound = _acc_bound(weight, kernel in matches, matches[bias] if bias in matches else None)
        if bound is None or str(call.ty.dtype) != "int8" or not np.all(sh >= 1) \
                or not np.array_equal(matches[half].value.numpy(), (1 << (sh - 1)) - 1):  # not integer.py's rounding
            return call
        flat_m = np.broadcast_to(m.reshape(-1), bound.shape) if m.size in (1, bound.size) else None
        if flat_m is None or np.any(bound.astype(object) * flat_m.astype(object) >= EXACT):
            return call
        multiplier = m.astype(np.float64) * np.exp2(-sh.astype(np.float64))  # exact: m0 has 31 bits
        if np.any(bound * np.broadcast_to(multiplier.reshape(-1), bound.shape) >= 2**31 - 2**8):
            return call  # the rounded value would not fit the int32 it is converted to
        x = relax.op.astype(matches[widened].args[0], "float64")
        y = relax.op.astype(relax.op.round(relax.op.multiply(x, relax.const(multiplier, "float64"))), "int32")
        y = relax.op.add(y, relax.const(matches[zero].value.numpy().astype(np.int32), "int32"))
        return relax.op.astype(relax.op.clip(y, lo, hi), "int8")

    @relax.transform.function_pass(opt_level=0, name="edgeprune.Float64Requant")
    def run(func: relax.Function, _mod, _ctx) -> relax.Function:
        return rewrite_call(pattern, rewrite, func)

    return run
