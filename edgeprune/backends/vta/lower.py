"""Lowering of one quantized layer (conv2d, dense) to a VTA program: tiling, instructions, micro-ops and data.

Integer semantics, shared with `reference_conv2d` / `reference_dense`: int8 x int8 products summed in int32
(wrapping), plus an int32 bias, an arithmetic shift right by `shift` (floor, as VTA's SHR), clipped to
[-128, 127], or [0, 127] with ReLU; with `round_first` the shift rounds half to even instead, as onnxruntime's
QuantizeLinear does. Further requantization stages (`then`: a ReLU or rescale that the quantized graph puts after
the layer) each round half to even, shift, and clip again. VTA has no per-channel multiplier, so this needs the
quantizer's power-of-two mode (zero points 0); per-channel weight scales become per-channel shifts, accumulator
rows that ALU SHR takes as its operand.

Rounding half to even with shifts, adds and MAX only (VTA has no AND): with h = 2^(s-1),
round(x / 2^s) = max((x + h - 1) >> s, ((x + h) >> (s + 1)) << 1), the second term on a scratch copy.

Schedule. The output is cut into tiles (output channel blocks x rows x columns) that fit an accumulator slot;
the reduction over input channel blocks is cut into chunks whose inputs and weights fit a slot of the input
and weight buffers. Two slots of each buffer, used alternately, let the load unit fill one while compute
reads the other, and let the store unit drain one output tile while compute fills the next; dependency
tokens order every reuse of a slot (the simulator rejects any race). Convolution padding comes from the load
unit's pad fields. A GEMM runs the reduction on its outer loop and keeps consecutive micro-ops on different
accumulator rows (the hardware's pipeline hazard); a tile of a single row alternates two partial rows.

Every DRAM address in an instruction is relative to a named region, and `Program.relocs` says which, so a
host driver can place each region anywhere.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import product
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgeprune.backends.vta.config import VTAConfig
from edgeprune.backends.vta.isa import (INSN_BYTES, UOP_BYTES, Alu, AluOp, Finish, Gemm, Insn, Load, MemType, Store,
                                        Uop, encode_program, encode_uop)
from edgeprune.backends.vta.pack import (blocks, pack_activations, pack_bias, pack_weights,
                                         unpack_activations)
from edgeprune.backends.vta.sim import SimResult, Simulator
from edgeprune.errors import UserError

INT8_MIN, INT8_MAX = -128, 127
MAX_SHIFT = 31  # of int32; the hardware reads 5 bits of a shift amount, so longer ones take two SHRs
_SHR_STEP = 15
_INSN_COST = 256  # bytes of DRAM traffic one instruction is taken to cost when comparing tilings
# The buffer whose element size counts each region's DRAM fields.
REGION_BUFFER = {"uop": "uop", "wgt": "wgt", "bias": "acc", "inp": "inp", "inp2": "inp", "out": "out"}
# One requantization: arithmetic shift right (negative: left), then clip to [0 if relu else -128, 127]. A layer's
# first stage may shift each output channel by its own amount (per-channel weight scales): an int array.
Stage = tuple["int | np.ndarray", bool]


@dataclass(frozen=True)
class Reloc:
    """Field `field` of instruction `insn` counts elements from the start of `region`: add the region's base."""

    insn: int
    field: str
    region: str


@dataclass(frozen=True)
class Region:
    offset: int  # bytes from the start of the default image
    size: int  # bytes
    align: int  # a base address must be a multiple of this (the element size its fields count in)
    format: str  # what the bytes are, for a driver and a manifest


@dataclass(frozen=True)
class Tiling:
    """Blocks per tile (output channel blocks, rows, columns) and per reduction chunk (input channel blocks).

    Exposed so that tests and reports can see how a layer was cut."""

    ob: int
    rows: int
    cols: int
    cb: int
    tiles: int
    chunks: int  # in the whole program: tiles x chunks per tile
    ob_outer: bool  # tile order: output channel blocks outermost (weights stay), or innermost (inputs stay)


class Image(NamedTuple):
    """What a host driver copies to the board."""

    insn: bytes  # dram_base fields relative to their region: apply `relocs`
    uop: bytes
    dram: np.ndarray  # every region at its `layout` offset, the instructions linked to those offsets
    relocs: list[Reloc]
    layout: dict[str, Region]


@dataclass(frozen=True)
class _Geom:
    """A convolution in blocks; dense is the 1x1 case."""

    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    stride: int
    pad: int
    cb: int
    ob: int

    @property
    def oh(self) -> int:
        return (self.h + 2 * self.pad - self.kh) // self.stride + 1

    @property
    def ow(self) -> int:
        return (self.w + 2 * self.pad - self.kw) // self.stride + 1

    def span(self, n: int, k: int) -> int:
        """Input rows (or columns) that n output rows (columns) read."""
        return (n - 1) * self.stride + k


@dataclass
class Program:
    """A compiled layer: relative instructions, micro-ops, packed constants, and what the host must place."""

    config: VTAConfig
    insns: list[Insn]
    uops: list[Uop]
    relocs: list[Reloc]
    consts: dict[str, np.ndarray]  # region -> packed weights or bias
    inputs: dict[str, tuple[int, ...]]  # input region -> unpacked shape (NCHW, or (1, features) for dense)
    out_shape: tuple[int, ...]
    macs: int  # of the layer itself, without channel padding
    tiling: Tiling | None
    packed: dict[str, tuple[int, ...]]  # activation region (inputs and "out") -> NCHW1n16c shape

    @property
    def in_shape(self) -> tuple[int, ...]:
        return next(iter(self.inputs.values()))

    def sizes(self) -> dict[str, int]:
        return {"insn": INSN_BYTES * len(self.insns), "uop": UOP_BYTES * len(self.uops),
                **{n: a.nbytes for n, a in self.consts.items()},
                **{n: int(np.prod(shape)) for n, shape in self.packed.items()}}

    def layout(self) -> dict[str, Region]:
        """The default placement: regions back to back from 0, each aligned as its fields require."""
        c = self.config
        formats = {"insn": f"{len(self.insns)} VTA instructions of {INSN_BYTES} B, dram_base fields relocated",
                   "uop": f"{len(self.uops)} micro-ops of {UOP_BYTES} B",
                   "wgt": f"int8 OIHW{c.block_out}o{c.block_in}i {self.consts['wgt'].shape}",
                   **({"bias": f"int32 accumulator rows {self.consts['bias'].shape}"} if "bias" in self.consts else {}),
                   **{n: f"int8 NCHW1n{c.block_in}c {shape}" for n, shape in self.packed.items()}}
        layout, end = {}, 0
        for name, size in self.sizes().items():
            align = INSN_BYTES if name == "insn" else c.elem_bytes[REGION_BUFFER[name]]
            end = -(-end // align) * align
            layout[name], end = Region(end, size, align, formats[name]), end + size
        return layout

    def link(self, bases: dict[str, int]) -> list[Insn]:
        """The instructions with every region at byte address bases[region]."""
        insns = list(self.insns)
        for r in self.relocs:
            eb = self.config.elem_bytes[REGION_BUFFER[r.region]]
            if bases[r.region] % eb:
                raise ValueError(f"region {r.region} at {bases[r.region]:#x} is not aligned to its {eb}-byte elements")
            insn = insns[r.insn]
            insns[r.insn] = replace(insn, **{r.field: getattr(insn, r.field) + bases[r.region] // eb})
        return insns

    def pack_input(self, x: np.ndarray, region: str = "inp") -> np.ndarray:
        shape = self.inputs[region]
        if x.shape != shape:
            raise ValueError(f"input of shape {x.shape}, the layer was compiled for {shape}")
        _, _, h, w, _, _ = self.packed[region]
        return pack_activations(x.reshape(1, -1, h, w), self.config.block_in)

    def unpack_output(self, raw: bytes | np.ndarray) -> np.ndarray:
        packed = np.frombuffer(raw, np.int8).reshape(self.packed["out"])
        return unpack_activations(packed, self.out_shape[1]).reshape(self.out_shape)

    def image(self, *xs: np.ndarray) -> Image:
        """The default DRAM image, with the inputs if they are given (else their regions stay zero)."""
        layout = self.layout()
        dram = np.zeros(max(r.offset + r.size for r in layout.values()), np.uint8)
        uop = b"".join(encode_uop(u) for u in self.uops)
        data = {"insn": encode_program(self.link({n: r.offset for n, r in layout.items()})), "uop": uop,
                **{n: a.tobytes() for n, a in self.consts.items()}}
        for region, x in zip(self.inputs, xs):
            data[region] = self.pack_input(x, region).tobytes()
        for name, raw in data.items():
            dram[layout[name].offset:layout[name].offset + len(raw)] = np.frombuffer(raw, np.uint8)
        return Image(encode_program(self.insns), uop, dram, list(self.relocs), layout)


def simulate(program: Program, *xs: np.ndarray, portable: bool = True) -> tuple[np.ndarray, SimResult]:
    """Run a compiled layer on our simulator: the output, unpacked, and the run's counters."""
    img = program.image(*xs)
    insn, out = img.layout["insn"], img.layout["out"]
    result = Simulator(img.dram, program.config).run(img.dram[insn.offset:insn.offset + insn.size].tobytes(),
                                                     portable)
    return program.unpack_output(img.dram[out.offset:out.offset + out.size]), result


# -- the integer reference ------------------------------------------------------------------------------------

def round_shift(acc: np.ndarray, shift: int | np.ndarray) -> np.ndarray:
    """acc / 2^shift rounded half to even where shift > 0 (elsewhere shift is 0): onnxruntime's rounding."""
    s = np.maximum(shift, 0)
    floor = acc >> s
    rem, half = acc - (floor << s), np.left_shift(1, np.maximum(s - 1, 0))
    return floor + ((np.asarray(shift) > 0) & ((rem > half) | ((rem == half) & ((floor & 1) == 1))))


def requantize(acc: np.ndarray, stages: Sequence[Stage], round_first: bool = False) -> np.ndarray:
    """int32 accumulators through the requantization stages, as `Stream.requant` computes them on VTA."""
    acc = acc.astype(np.int32).astype(np.int64)  # wraps modulo 2^32, as VTA's int32 adds do
    for n, (shift, relu) in enumerate(stages):
        if (n or round_first) and np.any(np.asarray(shift) > 0):
            acc = round_shift(acc, shift)
        else:
            acc = acc >> shift if np.all(np.asarray(shift) >= 0) else acc << -shift
        acc = np.clip(acc, 0 if relu else INT8_MIN, INT8_MAX)
    return acc.astype(np.int8)


def _requantize(acc: np.ndarray, shift: int, relu: bool, then: Sequence[Stage], round_first: bool) -> np.ndarray:
    return requantize(acc, [(shift, relu), *then], round_first)


class Stream:
    """An instruction stream under construction: relocations, and micro-op lists shared wherever identical."""

    def __init__(self) -> None:
        self.insns: list[Insn] = []
        self.relocs: list[Reloc] = []
        self.uops: list[Uop] = []
        self._lists: dict[tuple[Uop, ...], int] = {}

    def add(self, insn: Insn, region: str | None = None) -> None:
        if region:
            self.relocs.append(Reloc(len(self.insns), "dram_base", region))
        self.insns.append(insn)

    def uop_range(self, uops: list[Uop]) -> dict[str, int]:
        start = self._lists.setdefault(tuple(uops), len(self.uops))
        if start == len(self.uops):
            self.uops.extend(uops)
        return {"uop_bgn": start, "uop_end": start + len(uops)}

    def requant(self, stages: Sequence[Stage], loops: dict[str, int], acc: int, tmp: int, round_first: bool = False,
                folded: bool = False, channel_rows: tuple[list[int], int] | None = None) -> None:
        """Take the accumulator rows at `acc` (walked by `loops`) through the stages; the last op pushes to store.

        `tmp`: scratch rows of the same layout, for rounding. `channel_rows` (a layer's first stage with
        per-channel shifts): the shift rows and the increment row (1 where a channel rounds), indexed by output
        channel block. `folded`: the bias already holds the first stage's h - 1."""
        def at(dst: int, src: int | None = None, per_block: bool = False) -> dict[str, int]:
            steps = {"src_factor_out": 1} if per_block else {} if src is None else \
                {"src_factor_out": loops["dst_factor_out"], "src_factor_in": loops["dst_factor_in"]}
            return loops | self.uop_range([Uop(dst, src or 0)]) | steps

        def shr(base: int, shift: int, per_channel: bool) -> list[Alu]:
            if per_channel:
                return [Alu(alu_op=AluOp.SHR, **at(base, row, True)) for row in channel_rows[0]]
            if shift < -16:
                raise UserError(f"a left shift of {-shift} bits: VTA's shifter takes at most 16")
            return [Alu(alu_op=AluOp.SHR, use_imm=True, imm=min(s, _SHR_STEP), **at(base))
                    for s in (range(shift, 0, -_SHR_STEP) if shift > 0 else [shift] if shift else [])]

        ops: list[Insn] = []
        for n, (shift, relu) in enumerate(stages):
            per_channel = n == 0 and channel_rows is not None
            if (n or round_first) and (per_channel or shift > 0):
                if not (n == 0 and folded) and shift > 1:
                    if shift > _SHR_STEP:
                        raise UserError(f"a rounding shift of {shift} bits: VTA's 16-bit immediate holds at most 15")
                    ops.append(Alu(alu_op=AluOp.ADD, use_imm=True, imm=(1 << shift - 1) - 1, **at(acc)))
                ops += [Gemm(reset=True, **at(tmp)), Alu(alu_op=AluOp.ADD, **at(tmp, acc)),
                        Alu(alu_op=AluOp.ADD, **at(tmp, channel_rows[1], True)) if per_channel else
                        Alu(alu_op=AluOp.ADD, use_imm=True, imm=1, **at(tmp))]
                ops += shr(tmp, shift, True) + [Alu(alu_op=AluOp.SHR, use_imm=True, imm=1, **at(tmp))] \
                    if per_channel else shr(tmp, shift + 1, False)
                ops.append(Alu(alu_op=AluOp.SHR, use_imm=True, imm=-1, **at(tmp)))
                ops += shr(acc, shift, per_channel) + [Alu(alu_op=AluOp.MAX, **at(acc, tmp))]
            else:
                ops += shr(acc, shift, per_channel)
            ops += [Alu(alu_op=AluOp.MAX, use_imm=True, imm=0 if relu else INT8_MIN, **at(acc)),
                    Alu(alu_op=AluOp.MIN, use_imm=True, imm=INT8_MAX, **at(acc))]
        for op in ops[:-1]:
            self.add(op)
        self.add(replace(ops[-1], push_next=True))


def reference_conv2d(x_q: np.ndarray, w_q: np.ndarray, bias: np.ndarray, stride: int = 1, pad: int = 0,
                     shift: int = 0, relu: bool = False, then: Sequence[Stage] = (),
                     round_first: bool = False) -> np.ndarray:
    """NCHW int8 (N = 1) -> NCHW int8 with the exact integer semantics of the compiled program."""
    x = np.pad(x_q[0].astype(np.int64), ((0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(x, w_q.shape[2:], axis=(1, 2))[:, ::stride, ::stride]
    acc = np.einsum("chwij,ocij->ohw", windows, w_q.astype(np.int64)) + bias.astype(np.int64)[:, None, None]
    return _requantize(acc, np.reshape(shift, (-1, 1, 1)) if np.ndim(shift) else shift, relu, then, round_first)[None]


def reference_dense(x_q: np.ndarray, w_q: np.ndarray, bias: np.ndarray, shift: int = 0,
                    relu: bool = False, then: Sequence[Stage] = (), round_first: bool = False) -> np.ndarray:
    """(1, C) int8 x (O, C) int8 -> (1, O) int8, as `reference_conv2d` on a 1x1 image."""
    return _requantize(x_q.astype(np.int64) @ w_q.astype(np.int64).T + bias.astype(np.int64), shift, relu, then,
                       round_first)


# -- lowering -------------------------------------------------------------------------------------------------

def lower_conv2d(w_q: np.ndarray, bias: np.ndarray, in_hw: tuple[int, int], stride: int = 1, pad: int = 0,
                 shift: int = 0, relu: bool = False, config: VTAConfig = VTAConfig(),
                 then: Sequence[Stage] = (), round_first: bool = False) -> Program:
    """Compile y = requantize(conv2d(x, w_q, stride, pad) + bias) for an int8 NCHW input of spatial size in_hw."""
    if w_q.ndim != 4:
        raise UserError(f"conv2d weights must be OIHW, got shape {w_q.shape}")
    o, c, kh, kw = w_q.shape
    if not 0 <= pad < min(kh, kw):
        raise UserError(f"conv2d padding {pad} with a {kh}x{kw} kernel: VTA lowering needs 0 <= padding < kernel "
                        f"(a window of only padding has no input row for the load unit to pad)")
    if stride < 1:
        raise UserError(f"conv2d stride {stride}: must be at least 1")
    g = _Geom(c, *in_hw, o, kh, kw, stride, pad, blocks(c, config.block_in), blocks(o, config.block_out))
    if g.oh < 1 or g.ow < 1:
        raise UserError(f"conv2d of a {in_hw} input with a {kh}x{kw} kernel and padding {pad} has no output")
    return _lower(g, w_q, bias, [(shift, relu), *then], config, (1, c, *in_hw), (1, o, g.oh, g.ow), round_first)


def lower_dense(w_q: np.ndarray, bias: np.ndarray, shift: int = 0, relu: bool = False,
                config: VTAConfig = VTAConfig(), then: Sequence[Stage] = (), round_first: bool = False) -> Program:
    """Compile y = requantize(x @ w_q.T + bias) for an int8 (1, C) input: a 1x1 conv on a 1x1 image."""
    if w_q.ndim != 2:
        raise UserError(f"dense weights must be (out, in), got shape {w_q.shape}")
    o, c = w_q.shape
    g = _Geom(c, 1, 1, o, 1, 1, 1, 0, blocks(c, config.block_in), blocks(o, config.block_out))
    return _lower(g, w_q.reshape(o, c, 1, 1), bias, [(shift, relu), *then], config, (1, c), (1, o), round_first)


def _lower(g: _Geom, w_q: np.ndarray, bias: np.ndarray, stages: list[Stage], config: VTAConfig,
           in_shape: tuple[int, ...], out_shape: tuple[int, ...], round_first: bool) -> Program:
    if w_q.dtype != np.int8:
        raise UserError(f"weights must be int8 (quantized), got {w_q.dtype}")
    if bias.dtype != np.int32 or bias.shape != (g.o,):
        raise UserError(f"bias must be int32 of shape ({g.o},), got {bias.dtype} {bias.shape}")
    shift = np.broadcast_to(np.asarray(stages[0][0], np.int64), (g.o,))
    if shift.min() < 0 or shift.max() > MAX_SHIFT:
        raise UserError(f"requantization shift {shift.min()}..{shift.max()}: must be in 0..{MAX_SHIFT}")
    # Per-channel shifts are accumulator rows (ALU SHR by a register operand), at most 15 bits per row.
    per_channel = len(set(shift.tolist())) > 1
    shift_rows = [np.minimum(np.maximum(shift - k, 0), _SHR_STEP).astype(np.int32)
                  for k in range(0, int(shift.max()), _SHR_STEP)] if per_channel else []
    rounds = bool(round_first and shift.max() > 0)
    if rounds:  # h - 1 of round half to even rides on the bias; the increment row adds 1 where a channel rounds
        bias = (bias.astype(np.int64) + np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)) - 1, 0)
                ).astype(np.int32)
    inc_rows = [(shift > 0).astype(np.int32)] if rounds and per_channel else []
    stages = [(0 if per_channel else int(shift[0]), stages[0][1]), *stages[1:]]
    scratch = bool(rounds or any(np.any(np.asarray(s) > 0) for s, _ in stages[1:]))
    if config.batch != 1:
        raise UserError(f"VTA configuration {config.bitstream}: lowering supports batch 1 only")
    const_rows = [bias, *shift_rows, *inc_rows]
    tiling = _plan(g, config, len(const_rows), scratch)
    e = _Emitter(g, tiling, scratch)
    e.emit(stages, len(shift_rows), round_first, rounds)
    consts = {"wgt": pack_weights(w_q, config.block_out, config.block_in),
              "bias": np.concatenate([pack_bias(r, config.block_out) for r in const_rows])}
    packed = {"inp": (1, g.cb, g.h, g.w, 1, config.block_in), "out": (1, g.ob, g.oh, g.ow, 1, config.block_out)}
    return Program(config, e.insns, e.uops, e.relocs, consts, {"inp": in_shape}, out_shape,
                   g.o * g.c * g.kh * g.kw * g.oh * g.ow, tiling, packed)


def _gemm_mode(ob: int, rows: int, cols: int) -> str:
    """Which output dimension the GEMM's inner loop walks, so that consecutive micro-ops write different rows:
    'y' (micro-ops over blocks and columns), 'x' (over blocks and rows), or 'split' for a one-row tile."""
    return "y" if ob * cols >= 2 else "x" if ob * rows >= 2 else "split"


def _sizes(n: int) -> list[int]:
    """Tile sizes worth trying: each number of tiles gives one, the largest that many tiles need."""
    return sorted({-(-n // k) for k in range(1, n + 1)})


def _tails(n: int, t: int) -> set[int]:
    """The sizes tiles of size t take when they cover n: t, and the last one, which may be shorter."""
    return {t, n - (-(-n // t) - 1) * t}


def _plan(g: _Geom, config: VTAConfig, const_sets: int = 1, scratch: bool = False) -> Tiling:
    """The tiling with the least DRAM traffic (plus a cost per instruction) that fits every buffer twice."""
    depth, eb, kk = config.depth, config.elem_bytes, g.kh * g.kw
    best: tuple[float, Tiling] | None = None
    for tcb in _sizes(g.cb):
        for tob in _sizes(g.ob):
            if 2 * tob * tcb * kk > depth["wgt"]:
                break
            for th in _sizes(g.oh):
                if 2 * tcb * g.span(th, g.kh) * g.kw > depth["inp"] or (2 + scratch) * max(tob * th, 2) + g.ob * const_sets > depth["acc"]:
                    break
                for tw in _sizes(g.ow):
                    ih, iw = g.span(th, g.kh), g.span(tw, g.kw)
                    if 2 * tcb * ih * iw > depth["inp"] or (2 + scratch) * max(tob * th * tw, 2) + g.ob * const_sets > depth["acc"]:
                        break
                    n_ob, n_y, n_x, n_cb = (-(-full // t) for full, t in
                                            ((g.ob, tob), (g.oh, th), (g.ow, tw), (g.cb, tcb)))
                    tiles = n_ob * n_y * n_x
                    fixed = _INSN_COST * tiles * (g.cb + 2 * n_cb + tob + 6) + tiles * tob * th * tw * eb["out"]
                    inp = n_y * n_x * g.cb * ih * iw * eb["inp"]  # all inputs once (with halos)
                    wgt = g.ob * g.cb * kk * eb["wgt"]
                    # Data shared by consecutive tiles stays in its two slots if a tile has one chunk.
                    most = 2 if n_cb == 1 else tiles
                    cost, ob_outer = min((fixed + inp * n_ob + wgt * min(most, n_y * n_x), True),
                                         (fixed + inp * min(most, n_ob) + wgt * n_y * n_x, False))
                    if (best is None or cost < best[0]) and _uop_bound(g, (tob, th, tw, tcb), n_ob, const_sets) <= depth["uop"]:
                        best = cost, Tiling(tob, th, tw, tcb, tiles, tiles * n_cb, ob_outer)
    if best is None:
        raise UserError(f"a {g.kh}x{g.kw} kernel over {g.ob} output channel blocks does not fit the VTA buffers "
                        f"of {config.bitstream}, even one block at a time")
    return best[1]


def _uop_bound(g: _Geom, tile: tuple[int, int, int, int], ob_tiles: int, const_sets: int = 1) -> int:
    """Micro-ops the program can need: a GEMM list per tile shape and per slot pair, plus the ALU lists (per slot:
    whole-tile lists, and per output block one per constant row set, read into the rows and the scratch rows)."""
    tob, th, tw, tcb = tile
    kk, total = g.kh * g.kw, 12 + 4 * ob_tiles * const_sets
    for ob, rows, cols, cb in product(_tails(g.ob, tob), _tails(g.oh, th), _tails(g.ow, tw), _tails(g.cb, tcb)):
        mode = _gemm_mode(ob, rows, cols)
        total += 4 * kk * (ob * cols if mode == "y" else ob * rows if mode == "x" else cb)
    return total


class _Emitter(Stream):
    """A conv/dense layer's stream: two slots per buffer, scratch rows for rounding, then constant rows."""

    def __init__(self, g: _Geom, t: Tiling, scratch: bool) -> None:
        super().__init__()
        self.g, self.t = g, t
        self.kk = g.kh * g.kw
        self.acc_rows = t.rows * t.cols  # per output channel block of a tile
        self.acc_slot = max(t.ob * self.acc_rows, 2)
        self.tmp = 2 * self.acc_slot
        self.bias_base = (2 + scratch) * self.acc_slot
        self.plane = g.span(t.rows, g.kh) * g.span(t.cols, g.kw)  # one input channel block of a tile
        self.inp_slot, self.wgt_slot = t.cb * self.plane, t.ob * t.cb * self.kk
        self._gemms: dict[tuple[int, ...], Gemm] = {}

    def emit(self, stages: Sequence[Stage], shift_rows: int, round_first: bool, folded: bool) -> None:
        g, t = self.g, self.t
        const_sets = 1 + shift_rows + (folded and shift_rows > 0)  # bias, shift rows, increment row
        self.insns = [Finish(), Finish()]  # the micro-op and bias loads, once the micro-ops are known
        obs = [(ob0, min(t.ob, g.ob - ob0)) for ob0 in range(0, g.ob, t.ob)]
        spatial = [(y0, min(t.rows, g.oh - y0), x0, min(t.cols, g.ow - x0))
                   for y0 in range(0, g.oh, t.rows) for x0 in range(0, g.ow, t.cols)]
        tiles = [(*o, *s) for o, s in product(obs, spatial)] if t.ob_outer else \
            [(*o, *s) for s, o in product(spatial, obs)]
        chunks = [(cb0, min(t.cb, g.cb - cb0)) for cb0 in range(0, g.cb, t.cb)]
        held: dict[str, list[tuple[int, ...] | None]] = {"inp": [None, None], "wgt": [None, None]}  # by slot
        k = 0
        for i, (ob0, tob, y0, th, x0, tw) in enumerate(tiles):
            acc = i % 2 * self.acc_slot
            split = _gemm_mode(tob, th, tw) == "split"
            # every accumulator row of the tile, with one micro-op
            rows = {"iter_out": tob, "dst_factor_out": self.acc_rows, "iter_in": th * tw, "dst_factor_in": 1,
                    **self.uop_range([Uop(acc, 0)])}
            self.add(Gemm(reset=True, **(rows | {"iter_in": 2} if split else rows),
                          pop_next=i >= 2))  # the store of the tile that used this slot has drained it
            for cb0, tcb in chunks:
                # A slot's inputs or weights still in place from two chunks ago are not reloaded; never
                # both, as chunks two apart differ in tile or in input channels.
                slot, loads = k % 2, []
                if held["inp"][slot] != (cb0, y0, x0):
                    held["inp"][slot] = (cb0, y0, x0)
                    loads += self.inp_loads(slot, y0, th, x0, tw, cb0, tcb)
                if held["wgt"][slot] != (ob0, cb0):
                    held["wgt"][slot] = (ob0, cb0)
                    loads += self.wgt_loads(slot, ob0, tob, cb0, tcb)
                loads[0] = (replace(loads[0][0], pop_next=k >= 2), loads[0][1])
                loads[-1] = (replace(loads[-1][0], push_next=True), loads[-1][1])
                for insn, region in loads:
                    self.add(insn, region)
                self.add(replace(self.gemm(acc, slot, tob, th, tw, tcb), pop_prev=True,
                                 push_prev=k + 2 < t.chunks))
                k += 1
            if split:
                self.add(Alu(alu_op=AluOp.ADD, **self.uop_range([Uop(acc, acc + 1)])))
            self.add(Alu(alu_op=AluOp.ADD, **rows | self.uop_range([Uop(acc, self.bias_base + ob0)]),
                         src_factor_out=1))
            rows_of = [self.bias_base + j * g.ob + ob0 for j in range(1, 2 + shift_rows)]  # shifts, increments
            self.requant(stages, {k: v for k, v in rows.items() if not k.startswith("uop")}, acc, self.tmp,
                         round_first, folded, (rows_of[:-1], rows_of[-1]) if shift_rows else None)
            for ob in range(tob):
                self.add(Store(mem_type=MemType.OUT, sram_base=acc + ob * self.acc_rows,
                               dram_base=((ob0 + ob) * g.oh + y0) * g.ow + x0, y_size=th, x_size=tw, x_stride=g.ow,
                               pop_prev=ob == 0,
                               push_prev=ob == tob - 1 and (i + 2 < len(tiles) or i == len(tiles) - 1)), "out")
        self.add(Finish(pop_next=True))
        self.insns[0] = Load(mem_type=MemType.UOP, sram_base=0, dram_base=0, y_size=1, x_size=len(self.uops),
                             x_stride=len(self.uops))
        self.insns[1] = Load(mem_type=MemType.ACC, sram_base=self.bias_base, dram_base=0, y_size=1,
                             x_size=g.ob * const_sets, x_stride=g.ob * const_sets)
        self.relocs[:0] = [Reloc(0, "dram_base", "uop"), Reloc(1, "dram_base", "bias")]

    def inp_loads(self, slot: int, y0: int, th: int, x0: int, tw: int, cb0: int,
                  tcb: int) -> list[tuple[Load, str]]:
        """A chunk's inputs: one padded 2-D load per channel block."""
        g = self.g
        ih, iw = g.span(th, g.kh), g.span(tw, g.kw)
        iy, ix = y0 * g.stride - g.pad, x0 * g.stride - g.pad
        yp0, yp1 = max(0, -iy), max(0, iy + ih - g.h)
        xp0, xp1 = max(0, -ix), max(0, ix + iw - g.w)
        return [(Load(mem_type=MemType.INP, sram_base=slot * self.inp_slot + cb * self.plane,
                      dram_base=((cb0 + cb) * g.h + iy + yp0) * g.w + ix + xp0, y_size=ih - yp0 - yp1,
                      x_size=iw - xp0 - xp1, x_stride=g.w, y_pad_0=yp0, y_pad_1=yp1, x_pad_0=xp0, x_pad_1=xp1),
                 "inp") for cb in range(tcb)]

    def wgt_loads(self, slot: int, ob0: int, tob: int, cb0: int, tcb: int) -> list[tuple[Load, str]]:
        """A chunk's weights, ob-major with rows of t.cb blocks: one 2-D load, or a row each for a short chunk."""
        g, kk, wgt = self.g, self.kk, slot * self.wgt_slot
        rows = [(0, tob)] if tcb == self.t.cb or tob == 1 else [(ob, 1) for ob in range(tob)]
        return [(Load(mem_type=MemType.WGT, sram_base=wgt + ob * self.t.cb * kk,
                      dram_base=((ob0 + ob) * g.cb + cb0) * kk, y_size=n, x_size=tcb * kk, x_stride=g.cb * kk),
                 "wgt") for ob, n in rows]

    def gemm(self, acc: int, slot: int, tob: int, th: int, tw: int, tcb: int) -> Gemm:
        """One chunk's GEMM: input channel blocks on the outer loop, one output dimension on the inner loop."""
        key = (acc, slot, tob, th, tw, tcb)
        if key not in self._gemms:
            self._gemms[key] = self._new_gemm(*key)
        return self._gemms[key]

    def _new_gemm(self, acc: int, slot: int, tob: int, th: int, tw: int, tcb: int) -> Gemm:
        g, kk = self.g, self.kk
        iw = g.span(tw, g.kw)
        # (accumulator, input, weight) index steps of each loop variable in this tile's SRAM layouts
        coef = {"cb": (0, self.plane, kk), "ky": (0, iw, g.kw), "kx": (0, 1, 1),
                "ob": (self.acc_rows, 0, self.t.cb * kk), "y": (tw, g.stride * iw, 0), "x": (1, g.stride, 0)}
        count = {"cb": tcb, "ky": g.kh, "kx": g.kw, "ob": tob, "y": th, "x": tw}
        mode = _gemm_mode(tob, th, tw)
        if mode == "split":
            dims, loops = ["cb", "ky", "kx"], []
        else:
            dims, loops = ["ky", "kx", "ob", "x" if mode == "y" else "y"], ["cb", mode]
        uops = []
        for r, index in enumerate(product(*(range(count[d]) for d in dims))):
            dst, src, wgt = (sum(i * coef[d][f] for d, i in zip(dims, index)) for f in range(3))
            uops.append(Uop(acc + dst + (r % 2 if mode == "split" else 0), slot * self.inp_slot + src,
                            slot * self.wgt_slot + wgt))
        fields = {}
        for level, d in zip(("out", "in"), loops):
            fields |= {f"iter_{level}": count[d], f"dst_factor_{level}": coef[d][0],
                       f"src_factor_{level}": coef[d][1], f"wgt_factor_{level}": coef[d][2]}
        return Gemm(**self.uop_range(uops), **fields)
