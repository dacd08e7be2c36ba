"""Lowering of the int8 -> int8 layers without weights: residual add and max-pool (a lone ReLU is a 1x1 pool).

VTA's only way from an int8 input to the accumulators is the GEMM core, so a tile's inputs are copied in
with a GEMM against an identity weight block. Then:

- add: acc_a = a << shift_a, acc_b = b << shift_b (ALU SHR by a negative amount), ALU ADD acc_a += acc_b,
  then the requantization stages (round half to even, shift, clip): power-of-two scales make the rescale
  exact shifts;
- max-pool: the output rows start at -128 and take an ALU MAX per window offset (ky, kx), each one
  instruction whose loops walk the output rows and columns that offset reaches inside the image. Padding
  is never loaded, so it never wins a max: this is exact for any sign of input, unlike zero padding.

Tiles (channel blocks x rows x columns of the output) alternate between two slots of the input and
accumulator buffers with the same dependency-token pattern as `lower.py`, so loads, compute and stores of
consecutive tiles overlap; the simulator checks every reuse is ordered.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import product

import numpy as np

from edgeprune.backends.vta.config import VTAConfig
from edgeprune.backends.vta.isa import Alu, AluOp, Finish, Gemm, Load, MemType, Store, Uop
from edgeprune.backends.vta.lower import INT8_MIN, Program, Reloc, Stage, Stream, Tiling, _sizes, requantize
from edgeprune.backends.vta.pack import blocks
from edgeprune.errors import UserError

_MAX_LEFT = 16  # the widest left shift one ALU SHR does (hardware reads 5 bits)


# -- the integer references -----------------------------------------------------------------------------------

def reference_add(a: np.ndarray, b: np.ndarray, shift_a: int, shift_b: int, stages: Sequence[Stage]) -> np.ndarray:
    """requantize((a << shift_a) + (b << shift_b)), every stage rounding half to even."""
    acc = (a.astype(np.int64) << shift_a) + (b.astype(np.int64) << shift_b)
    return requantize(acc, stages, round_first=True)


def reference_maxpool(x: np.ndarray, kernel: tuple[int, int], stride: int, pad: int,
                      stages: Sequence[Stage] = ((0, False),)) -> np.ndarray:
    """NCHW int8 max-pool with padding that never wins (as ONNX MaxPool), then the stages."""
    x = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=np.iinfo(np.int64).min)
    windows = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=(2, 3))[:, :, ::stride, ::stride]
    return requantize(windows.max(axis=(4, 5)), stages, round_first=True)


# -- lowering -------------------------------------------------------------------------------------------------

def lower_add(shape: tuple[int, ...], shift_a: int, shift_b: int, stages: Sequence[Stage],
              config: VTAConfig = VTAConfig()) -> Program:
    """Compile y = requantize((a << shift_a) + (b << shift_b)) for two int8 NCHW (or (1, C)) tensors."""
    if not (0 <= shift_a <= _MAX_LEFT and 0 <= shift_b <= _MAX_LEFT):
        raise UserError(f"add: operand scales 2^{shift_a} and 2^{shift_b} apart: VTA shifts left at most {_MAX_LEFT}")
    c, h, w = _chw(shape)
    e = _Emitter(config, c, (h, w), (h, w), (1, 1), 1, 0, 2)
    e.emit(stages, lambda t, slot, rows: _add_ops(e, t, slot, rows, shift_a, shift_b))
    return e.program({"inp": shape, "inp2": shape}, shape, c * h * w)


def lower_maxpool(shape: tuple[int, ...], kernel: tuple[int, int], stride: int, pad: int,
                  stages: Sequence[Stage] = ((0, False),), config: VTAConfig = VTAConfig()) -> Program:
    """Compile y = requantize(maxpool(x)) for an int8 NCHW tensor; kernel (1, 1) makes a ReLU or rescale."""
    c, h, w = _chw(shape)
    kh, kw = kernel
    if stride < 1 or not 0 <= pad < min(kh, kw):
        raise UserError(f"max-pool stride {stride}, padding {pad}, kernel {kh}x{kw}: VTA lowering needs stride >= 1 "
                        f"and 0 <= padding < kernel")
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    if oh < 1 or ow < 1:
        raise UserError(f"max-pool of a {h}x{w} input with a {kh}x{kw} kernel has no output")
    e = _Emitter(config, c, (h, w), (oh, ow), kernel, stride, pad, 1)
    e.emit(stages, lambda t, slot, rows: _pool_ops(e, t, slot, rows))
    out = (1, c, oh, ow) if len(shape) == 4 else (1, c)
    return e.program({"inp": shape}, out, c * oh * ow * kh * kw)


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in shape)
    if len(shape) == 4 and shape[0] == 1:
        return shape[1], shape[2], shape[3]
    if len(shape) == 2 and shape[0] == 1:
        return shape[1], 1, 1
    raise UserError(f"VTA runs batch-1 NCHW or (1, features) tensors, got shape {tuple(shape)}")


class _Tile(tuple):
    """(cb0, tcb, y0, th, x0, tw) of the output, and the input rows/columns it reads."""

    cb0, tcb, y0, th, x0, tw, iy0, ih, ix0, iw = (property(lambda s, i=i: s[i]) for i in range(10))


class _Emitter(Stream):
    """Builds one layer's stream: inputs -> identity GEMM -> the layer's ALU ops -> requantization -> STORE."""

    def __init__(self, config: VTAConfig, c: int, in_hw: tuple[int, int], out_hw: tuple[int, int],
                 kernel: tuple[int, int], stride: int, pad: int, operands: int) -> None:
        super().__init__()
        self.config, self.c, self.cb = config, c, blocks(c, config.block_in)
        (self.h, self.w), (self.oh, self.ow) = in_hw, out_hw
        self.kernel, self.stride, self.pad, self.operands = kernel, stride, pad, operands
        self.plan()

    def span(self, o0: int, n: int, k: int, size: int) -> tuple[int, int]:
        """First input row (column) and how many of them n outputs from o0 read, inside the image."""
        lo = max(0, o0 * self.stride - self.pad)
        return lo, min(size, (o0 + n - 1) * self.stride - self.pad + k) - lo

    def plan(self) -> None:
        """The fewest tiles whose inputs (per operand) and accumulator rows fit each buffer twice."""
        depth, kh, kw = self.config.depth, *self.kernel
        best = None
        for tcb, th, tw in product(_sizes(self.cb), _sizes(self.oh), _sizes(self.ow)):
            ih, iw = (th - 1) * self.stride + kh, (tw - 1) * self.stride + kw
            inp = self.operands * tcb * ih * iw
            acc = tcb * th * tw + tcb * ih * iw if self.operands == 1 else 2 * tcb * th * tw
            if 2 * inp > depth["inp"] or 2 * max(acc, 2) > depth["acc"]:
                continue
            tiles = -(-self.cb // tcb) * -(-self.oh // th) * -(-self.ow // tw)
            if best is None or tiles < best[0]:
                best = tiles, (tcb, th, tw, inp // self.operands, acc)
        if best is None:
            raise UserError(f"a {kh}x{kw} window does not fit the VTA buffers of {self.config.bitstream}")
        self.n_tiles, (self.tcb, self.th, self.tw, self.inp_slot, self.acc_slot) = best

    def tiles(self) -> list[_Tile]:
        kh, kw = self.kernel
        out = []
        for cb0, y0, x0 in product(range(0, self.cb, self.tcb), range(0, self.oh, self.th), range(0, self.ow, self.tw)):
            tcb, th, tw = min(self.tcb, self.cb - cb0), min(self.th, self.oh - y0), min(self.tw, self.ow - x0)
            out.append(_Tile((cb0, tcb, y0, th, x0, tw, *self.span(y0, th, kh, self.h), *self.span(x0, tw, kw, self.w))))
        return out

    def emit(self, stages: Sequence[Stage], layer_ops) -> None:
        """Double-buffered tiles; `layer_ops(tile, acc, rows)` gives the ALU ops between input and stages."""
        tiles = self.tiles()
        n = len(tiles)
        self.insns = [Finish(), Finish()]  # the micro-op and identity-weight loads, once the micro-ops are known
        for i, t in enumerate(tiles):
            slot, acc = i % 2, i % 2 * self.acc_slot
            rows = {"iter_out": t.tcb * t.th, "dst_factor_out": t.tw, "iter_in": t.tw, "dst_factor_in": 1,
                    **self.uop_range([Uop(acc, 0)])}
            loads = [ld for k in range(self.operands) for ld in self.inp_loads(t, slot, k)]
            loads[0] = (replace(loads[0][0], pop_next=i >= 2), loads[0][1])
            loads[-1] = (replace(loads[-1][0], push_next=True), loads[-1][1])
            for insn, region in loads:
                self.add(insn, region)
            # zero every accumulator row of the slot, once the store of the tile that used it has drained it
            self.add(Gemm(reset=True, iter_out=self.acc_slot, dst_factor_out=1, pop_next=i >= 2,
                          **self.uop_range([Uop(acc, 0)])))
            for k in range(self.operands):  # copy each operand's input rows into accumulator rows
                plane = t.ih * t.iw
                self.add(Gemm(iter_out=t.tcb * plane, dst_factor_out=1, src_factor_out=1, pop_prev=k == 0,
                              push_prev=k == self.operands - 1 and i + 2 < n,
                              **self.uop_range([Uop(acc + self.src_row(k), slot * self.inp_slot * self.operands
                                                    + k * self.inp_slot)])))
            for alu in layer_ops(t, acc, rows):
                self.add(alu)
            # the scratch rows: operand b's copy (add) or the window inputs (pool), no longer needed
            self.requant(stages, {k: v for k, v in rows.items() if not k.startswith("uop")}, acc,
                         acc + self.src_row(self.operands - 1), round_first=True)
            for cb in range(t.tcb):
                self.add(Store(mem_type=MemType.OUT, sram_base=acc + cb * t.th * t.tw,
                               dram_base=((t.cb0 + cb) * self.oh + t.y0) * self.ow + t.x0, y_size=t.th, x_size=t.tw,
                               x_stride=self.ow, pop_prev=cb == 0,
                               push_prev=cb == t.tcb - 1 and (i + 2 < n or i == n - 1)), "out")
        self.add(Finish(pop_next=True))
        self.insns[0] = Load(mem_type=MemType.UOP, sram_base=0, dram_base=0, y_size=1, x_size=len(self.uops),
                             x_stride=len(self.uops))
        self.insns[1] = Load(mem_type=MemType.WGT, sram_base=0, dram_base=0, y_size=1, x_size=1, x_stride=1)
        # The identity block goes through the load queue ahead of tile 0's inputs, whose token orders it.
        self.relocs[:0] = [Reloc(0, "dram_base", "uop"), Reloc(1, "dram_base", "wgt")]

    def src_row(self, k: int) -> int:
        """Where operand k's copy starts in a slot: after the output rows (pool), or at 0 and tile size (add)."""
        out_rows = self.tcb * self.th * self.tw
        return out_rows if self.operands == 1 else k * out_rows

    def inp_loads(self, t: _Tile, slot: int, k: int) -> list[tuple[Load, str]]:
        """Operand k's rows of a tile, one 2-D load per channel block, dense in the slot."""
        base = (slot * self.operands + k) * self.inp_slot
        return [(Load(mem_type=MemType.INP, sram_base=base + cb * t.ih * t.iw,
                      dram_base=((t.cb0 + cb) * self.h + t.iy0) * self.w + t.ix0, y_size=t.ih, x_size=t.iw,
                      x_stride=self.w), "inp2" if k else "inp") for cb in range(t.tcb)]

    def program(self, inputs: dict[str, tuple[int, ...]], out_shape: tuple[int, ...], macs: int) -> Program:
        c, b = self.config, self.config.block_in
        if len(self.uops) > c.depth["uop"]:
            raise UserError(f"a {self.kernel[0]}x{self.kernel[1]} window over {self.cb} channel blocks needs "
                            f"{len(self.uops)} micro-ops; the micro-op buffer of {c.bitstream} holds {c.depth['uop']}")
        ident = np.eye(b, dtype=np.int8).reshape(1, 1, 1, 1, b, b)
        packed = {name: (1, self.cb, self.h, self.w, 1, b) for name in inputs} | \
            {"out": (1, self.cb, self.oh, self.ow, 1, b)}
        tiling = Tiling(1, self.th, self.tw, self.tcb, self.n_tiles, self.n_tiles, False)
        return Program(c, self.insns, self.uops, self.relocs, {"wgt": ident}, inputs, out_shape, macs, tiling, packed)


def _add_ops(e: _Emitter, t: _Tile, acc: int, rows: dict[str, int], shift_a: int, shift_b: int) -> list[Alu]:
    """acc_a <<= shift_a, acc_b <<= shift_b, acc_a += acc_b: both copies are laid out as the output rows."""
    other = e.src_row(1)
    ops = [Alu(alu_op=AluOp.SHR, use_imm=True, imm=-s, **rows | e.uop_range([Uop(acc + r, 0)]))
           for r, s in ((0, shift_a), (other, shift_b)) if s]
    return ops + [Alu(alu_op=AluOp.ADD, **rows | e.uop_range([Uop(acc, acc + other)]), src_factor_out=t.tw,
                      src_factor_in=1)]


def _pool_ops(e: _Emitter, t: _Tile, acc: int, rows: dict[str, int]) -> list[Alu]:
    """Output rows = -128, then one ALU MAX per window offset over the outputs it reaches inside the image."""
    ops = [Alu(alu_op=AluOp.MIN, use_imm=True, imm=INT8_MIN, **rows)]  # rows are 0 after the reset
    src0, plane, s = acc + e.src_row(0), t.ih * t.iw, e.stride
    for ky, kx in product(*map(range, e.kernel)):
        ys = [y for y in range(t.y0, t.y0 + t.th) if 0 <= y * s - e.pad + ky < e.h]
        xs = [x for x in range(t.x0, t.x0 + t.tw) if 0 <= x * s - e.pad + kx < e.w]
        if not ys or not xs:
            continue
        iy, ix = ys[0] * s - e.pad + ky - t.iy0, xs[0] * s - e.pad + kx - t.ix0
        uops = [Uop(acc + cb * t.th * t.tw + (ys[0] - t.y0) * t.tw + xs[0] - t.x0, src0 + cb * plane + iy * t.iw + ix)
                for cb in range(t.tcb)]
        ops.append(Alu(alu_op=AluOp.MAX, iter_out=len(ys), dst_factor_out=t.tw, src_factor_out=s * t.iw,
                       iter_in=len(xs), dst_factor_in=1, src_factor_in=s, **e.uop_range(uops)))
    return ops
