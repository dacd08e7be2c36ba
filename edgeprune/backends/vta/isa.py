"""VTA instructions and micro-ops as dataclasses, and their exact bit encodings (VTA.md).

Each format is a table of (field, lsb, width): encoding, decoding and range checks all read the same
table, so a field cannot be placed differently in one direction than in the other. Every field value is
checked when an instruction is built, so anything that exists can be encoded.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Union

import numpy as np

INSN_BYTES = 16
UOP_BYTES = 4


class ProgramError(Exception):
    """An instruction stream the hardware cannot run as meant; `insn` is the index at fault, if one is."""

    def __init__(self, message: str, insn: int | None = None) -> None:
        super().__init__(message)
        self.insn = insn


class Opcode(IntEnum):
    LOAD = 0
    STORE = 1
    GEMM = 2
    FINISH = 3
    ALU = 4


class MemType(IntEnum):
    UOP = 0
    WGT = 1
    INP = 2
    ACC = 3
    OUT = 4


class AluOp(IntEnum):
    MIN = 0
    MAX = 1
    ADD = 2
    SHR = 3
    MUL = 4


Field = tuple[str, int, int]  # name, lsb, width

_HEADER: tuple[Field, ...] = (("pop_prev", 3, 1), ("pop_next", 4, 1), ("push_prev", 5, 1), ("push_next", 6, 1))
_MEM: tuple[Field, ...] = _HEADER + (
    ("mem_type", 7, 3), ("sram_base", 10, 16), ("dram_base", 26, 32), ("y_size", 64, 16), ("x_size", 80, 16),
    ("x_stride", 96, 16), ("y_pad_0", 112, 4), ("y_pad_1", 116, 4), ("x_pad_0", 120, 4), ("x_pad_1", 124, 4))
_LOOP: tuple[Field, ...] = _HEADER + (
    ("uop_bgn", 8, 13), ("uop_end", 21, 14), ("iter_out", 35, 14), ("iter_in", 49, 14),
    ("dst_factor_out", 64, 11), ("dst_factor_in", 75, 11), ("src_factor_out", 86, 11), ("src_factor_in", 97, 11))
_GEMM: tuple[Field, ...] = _LOOP + (("reset", 7, 1), ("wgt_factor_out", 108, 10), ("wgt_factor_in", 118, 10))
_ALU: tuple[Field, ...] = _LOOP + (("alu_op", 108, 3), ("use_imm", 111, 1), ("imm", 112, 16))
_UOP: tuple[Field, ...] = (("dst", 0, 11), ("src", 11, 11), ("wgt", 22, 10))

_SIGNED = {"imm"}
_ENUMS = {"mem_type": MemType, "alu_op": AluOp}


def _check(obj: object, layout: tuple[Field, ...]) -> None:
    """Reject a value its bit field cannot hold, naming the field, at construction; enum codes become enums."""
    for name, _, width in layout:
        value = getattr(obj, name)
        if width == 1 and isinstance(value, bool):
            continue
        lo, hi = (-(1 << width - 1), (1 << width - 1) - 1) if name in _SIGNED else (0, (1 << width) - 1)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{type(obj).__name__}.{name} = {value!r} does not fit {width} bits ({lo}..{hi})")
        if name in _ENUMS:
            object.__setattr__(obj, name, _ENUMS[name](value))  # a code the hardware lacks raises here


@dataclass(frozen=True, kw_only=True)
class _Insn:
    """Dependency flags every instruction carries: pops happen before it runs, pushes after."""

    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    LAYOUT: ClassVar[tuple[Field, ...]] = _HEADER
    OPCODE: ClassVar[Opcode]

    def __post_init__(self) -> None:
        _check(self, self.LAYOUT)


@dataclass(frozen=True, kw_only=True)
class _MemInsn(_Insn):
    """A 2-D strided DRAM <-> SRAM transfer; sram_base/dram_base/x_stride count elements of mem_type."""

    mem_type: MemType
    sram_base: int
    dram_base: int
    y_size: int
    x_size: int
    x_stride: int
    y_pad_0: int = 0
    y_pad_1: int = 0
    x_pad_0: int = 0
    x_pad_1: int = 0

    LAYOUT: ClassVar[tuple[Field, ...]] = _MEM


@dataclass(frozen=True, kw_only=True)
class Load(_MemInsn):
    """Writes a zero-padded (y_pad_0+y_size+y_pad_1) x (x_pad_0+x_size+x_pad_1) image; x_size 0 only syncs."""

    OPCODE: ClassVar[Opcode] = Opcode.LOAD


@dataclass(frozen=True, kw_only=True)
class Store(_MemInsn):
    """Writes accumulator rows, truncated to int8 lanes, to DRAM."""

    OPCODE: ClassVar[Opcode] = Opcode.STORE


@dataclass(frozen=True, kw_only=True)
class _LoopInsn(_Insn):
    """Runs micro-ops [uop_bgn, uop_end) in an iter_out x iter_in loop, offsetting indices by the factors."""

    uop_bgn: int
    uop_end: int
    iter_out: int = 1
    iter_in: int = 1
    dst_factor_out: int = 0
    dst_factor_in: int = 0
    src_factor_out: int = 0
    src_factor_in: int = 0


@dataclass(frozen=True, kw_only=True)
class Gemm(_LoopInsn):
    """acc[dst] += inp[src] x wgt[wgt]^T, or acc[dst] = 0 with reset."""

    reset: bool = False
    wgt_factor_out: int = 0
    wgt_factor_in: int = 0

    LAYOUT: ClassVar[tuple[Field, ...]] = _GEMM
    OPCODE: ClassVar[Opcode] = Opcode.GEMM


@dataclass(frozen=True, kw_only=True)
class Alu(_LoopInsn):
    """acc[dst] = op(acc[dst], imm if use_imm else acc[src]), lane-wise on int32."""

    alu_op: AluOp
    use_imm: bool = False
    imm: int = 0

    LAYOUT: ClassVar[tuple[Field, ...]] = _ALU
    OPCODE: ClassVar[Opcode] = Opcode.ALU


@dataclass(frozen=True, kw_only=True)
class Finish(_Insn):
    """Raises done: the host's signal that the program has completed."""

    OPCODE: ClassVar[Opcode] = Opcode.FINISH


@dataclass(frozen=True)
class Uop:
    """One micro-op: accumulator, input (GEMM) or accumulator (ALU) source, and weight indices."""

    dst: int
    src: int
    wgt: int = 0

    def __post_init__(self) -> None:
        _check(self, _UOP)


Insn = Union[Load, Store, Gemm, Alu, Finish]
_BY_OPCODE: dict[int, type] = {cls.OPCODE: cls for cls in (Load, Store, Gemm, Alu, Finish)}


def _pack(obj: object, layout: tuple[Field, ...]) -> int:
    return sum((int(getattr(obj, name)) & ((1 << width) - 1)) << lsb for name, lsb, width in layout)


def _unpack(word: int, layout: tuple[Field, ...]) -> dict[str, int | bool]:
    values: dict[str, int | bool] = {}
    for name, lsb, width in layout:
        value = word >> lsb & ((1 << width) - 1)
        if name in _SIGNED and value >> (width - 1):
            value -= 1 << width
        values[name] = _ENUMS[name](value) if name in _ENUMS else bool(value) if width == 1 else value
    return values


def _mask(layout: tuple[Field, ...]) -> int:
    return sum(((1 << width) - 1) << lsb for _, lsb, width in layout)


def encode(insn: Insn) -> bytes:
    """16 bytes, little-endian: bit 0 is the LSB of the first byte."""
    return (int(insn.OPCODE) | _pack(insn, insn.LAYOUT)).to_bytes(INSN_BYTES, "little")


def decode(data: bytes) -> Insn:
    """The inverse of `encode`; reserved bits must be zero so that decode(b) re-encodes to b."""
    if len(data) != INSN_BYTES:
        raise ValueError(f"an instruction is {INSN_BYTES} bytes, got {len(data)}")
    word = int.from_bytes(data, "little")
    cls = _BY_OPCODE.get(word & 7)
    if cls is None:
        raise ValueError(f"unknown opcode {word & 7}")
    reserved = word & ~(7 | _mask(cls.LAYOUT))
    if reserved:
        raise ValueError(f"{cls.__name__}: reserved bits set: {reserved:#034x}")
    return cls(**_unpack(word, cls.LAYOUT))


def encode_uop(uop: Uop) -> bytes:
    return _pack(uop, _UOP).to_bytes(UOP_BYTES, "little")


def decode_uop(data: bytes) -> Uop:
    if len(data) != UOP_BYTES:
        raise ValueError(f"a micro-op is {UOP_BYTES} bytes, got {len(data)}")
    return Uop(**_unpack(int.from_bytes(data, "little"), _UOP))


def uop_fields(words: np.ndarray) -> tuple[np.ndarray, ...]:
    """(dst, src, wgt) of many micro-op words at once, from the same table, for the simulator's vector loops."""
    return tuple(((words >> lsb) & ((1 << width) - 1)).astype(np.int64) for _, lsb, width in _UOP)


def encode_program(insns: Sequence[Insn]) -> bytes:
    return b"".join(encode(insn) for insn in insns)


def decode_program(data: bytes) -> list[Insn]:
    """Decode a whole stream; a bad instruction is reported with its index."""
    if len(data) % INSN_BYTES:
        raise ProgramError(f"instruction stream of {len(data)} bytes is not a multiple of {INSN_BYTES}")
    insns = []
    for i in range(0, len(data), INSN_BYTES):
        try:
            insns.append(decode(data[i:i + INSN_BYTES]))
        except ValueError as e:
            raise ProgramError(f"insn {i // INSN_BYTES}: {e}", i // INSN_BYTES) from None
    return insns
