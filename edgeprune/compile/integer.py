"""Integer-only lowering of QDQ models: int8 x int8 -> int32 with fixed-point requantization.

TVM's ONNX frontend imports a QDQ model as fake quantization: dequantize, float conv, quantize.
This Relax rewrite turns each `quantize(conv2d|matmul(dequantize(x), dequantize(W)) [+ bias])`
into integer arithmetic, as the hardware should run it:

    acc = conv2d(int16(x_q) - zx, W_q, out_dtype=int32) + b_q          (b_q already at scale sx*sw)
    y_q = clip(round_half_even(int64(acc) * M0[c] / 2^sh[c]) + zy, -128, 127)     (shifts and adds only)

where sx*sw[c]/sy = M0[c] * 2^-sh[c] with M0 a Q31 integer. The zero point is taken out in int16, so
padding stays a real zero and the weights stay int8 in the library. Everything else (pooling, adds,
reshapes) keeps TVM's float path between dequantize and quantize: correct, and cheap next to the convs.
One lowering serves the ARM, microcontroller and VTA back ends.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

QUANTIZE, DEQUANTIZE = tvm.ir.Op.get("relax.quantize"), tvm.ir.Op.get("relax.dequantize")
CONV2D, MATMUL = tvm.ir.Op.get("relax.nn.conv2d"), tvm.ir.Op.get("relax.matmul")
ADD, RESHAPE, PERMUTE = tvm.ir.Op.get("relax.add"), tvm.ir.Op.get("relax.reshape"), tvm.ir.Op.get("relax.permute_dims")


def fixed_point(multiplier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q31 mantissas and right shifts with multiplier = m0 * 2^-shift."""
    multiplier = np.asarray(multiplier, np.float64)
    mantissa, exponent = np.frexp(multiplier)  # multiplier = mantissa * 2^exponent, mantissa in [0.5, 1)
    m0 = np.round(mantissa * 2.0**31).astype(np.int64)
    carry = m0 == 2**31
    m0 = np.where(carry, m0 // 2, m0)
    shift = 31 - (exponent + carry)
    return m0, shift.astype(np.int64)


def _const(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.GenericConst) else None


@mutator
class _Lower(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, var2val: dict):
        super().__init__(mod)
        self.var2val = var2val
        self.lowered = 0

    def _value(self, expr, op=None):
        expr = self.var2val.get(expr, expr) if isinstance(expr, relax.Var) else expr
        return expr if isinstance(expr, relax.Call) and (op is None or expr.op == op) else None

    def _compute(self, expr):
        """The conv2d or matmul call that defines `expr`, if any."""
        call = self._value(expr)
        return call if call is not None and (call.op == CONV2D or call.op == MATMUL) else None

    def _dequantized_constant(self, expr):
        """(int tensor, scale, zero point) of dequantize(constant), looking through permute/reshape."""
        permute = self._value(expr, PERMUTE)
        dq = self._value(permute.args[0] if permute is not None else expr, DEQUANTIZE)
        if dq is None or _const(dq.args[0]) is None:
            return None
        return dq.args[0], _const(dq.args[1]), _const(dq.args[2]), permute

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if call.op == QUANTIZE:
            lowered = self._lower(call)
            if lowered is not None:
                self.lowered += 1
                return lowered
        return super().visit_call_(call)

    def _lower(self, quant: relax.Call):
        sy, zy = _const(quant.args[1]), _const(quant.args[2])
        if sy is None or zy is None or sy.size != 1 or str(quant.ty.dtype) != "int8":
            return None
        body, bias = quant.args[0], None
        add = self._value(body, ADD)
        if add is not None:
            for core, other in ((add.args[0], add.args[1]), (add.args[1], add.args[0])):
                reshape = self._value(other, RESHAPE)
                found = self._dequantized_constant(reshape.args[0] if reshape is not None else other)
                if found is not None and self._compute(core) is not None:
                    body, bias = core, (found, reshape)
                    break
            else:
                return None
        compute = self._compute(body)
        if compute is None:
            return None
        x_dq = self._value(compute.args[0], DEQUANTIZE)
        weight = self._dequantized_constant(compute.args[1])
        if x_dq is None or weight is None:
            return None
        sx, zx = _const(x_dq.args[1]), _const(x_dq.args[2])
        w_q, sw, zw, permute = weight
        if sx is None or zx is None or sx.size != 1 or np.any(zw != 0) or str(w_q.ty.dtype) != "int8":
            return None
        if bias is not None:
            (b_q, sb, zb, _), reshape = bias
            if np.any(zb != 0) or not np.allclose(sb, sx * sw, rtol=1e-6):
                return None  # a bias at another scale would need its own rescale: keep the float path
        emit = self.builder_.emit
        x16 = emit(relax.op.subtract(relax.op.astype(x_dq.args[0], "int16"), relax.const(int(zx), "int16")))
        if compute.op == CONV2D:
            a = compute.attrs
            acc = emit(relax.op.nn.conv2d(x16, w_q, strides=a.strides, padding=a.padding, dilation=a.dilation,
                                          groups=a.groups, data_layout=a.data_layout, kernel_layout=a.kernel_layout,
                                          out_layout=a.out_layout, out_dtype="int32"))
            channel_shape = [1, -1] + [1] * (compute.ty.ndim - 2)
        else:
            w = emit(relax.op.permute_dims(w_q, permute.attrs.axes)) if permute is not None else w_q
            acc = emit(relax.op.matmul(x16, w, out_dtype="int32"))
            channel_shape = [1] * (compute.ty.ndim - 1) + [-1]
        if bias is not None:
            b = emit(relax.op.reshape(b_q, reshape.args[1])) if reshape is not None else b_q
            acc = emit(relax.op.add(acc, b))
        m0, shift = fixed_point(np.broadcast_to(sx * sw / sy, np.shape(sw) or (1,)))
        shape = channel_shape if m0.size > 1 else [1]
        scaled = emit(relax.op.multiply(relax.op.astype(acc, "int64"), relax.const(m0.reshape(shape), "int64")))
        # Round half to even, as onnxruntime's QuantizeLinear does: add half - 1, plus 1 when the
        # truncated result is odd (power-of-two scales make exact ties common).
        sh = relax.const(shift.reshape(shape), "int64")
        odd = emit(relax.op.bitwise_and(relax.op.right_shift(scaled, sh), relax.const(1, "int64")))
        half = relax.const(((np.int64(1) << (shift - 1)) - 1).reshape(shape), "int64")
        shifted = emit(relax.op.right_shift(relax.op.add(relax.op.add(scaled, half), odd), sh))
        out = emit(relax.op.add(shifted, relax.const(int(zy), "int64")))
        return relax.op.astype(relax.op.clip(out, -128, 127), "int8")


def lower_integer(mod: tvm.IRModule) -> tuple[tvm.IRModule, int]:
    """Rewrite every quantized conv/matmul of `main` to integer arithmetic; returns (module, count)."""
    func = mod["main"]
    lowering = _Lower(mod, relax.analysis.get_var2val(func))
    new_func = lowering.visit_expr(func)
    mod["main"] = new_func
    return relax.transform.DeadCodeElimination()(mod), lowering.lowered


def arithmetic_dtypes(mod: tvm.IRModule) -> dict[str, int]:
    """How many conv2d/matmul ops of `main` run in each dtype pair: the proof that int8 is integer."""
    counts: dict[str, int] = {}

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and (expr.op == CONV2D or expr.op == MATMUL):
            key = f"{expr.args[0].ty.dtype} x {expr.args[1].ty.dtype} -> {expr.ty.dtype}"
            counts[key] = counts.get(key, 0) + 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return dict(sorted(counts.items()))
