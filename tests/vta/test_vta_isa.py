"""Instruction and micro-op encodings, checked against VTA.md's field table as this test restates it."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeprune.backends.vta.isa import (Alu, AluOp, Finish, Gemm, Load, MemType, ProgramError, Store, Uop, decode,
                                        decode_program, decode_uop, encode, encode_program, encode_uop, uop_fields)

# VTA.md, restated independently of the encoder: field -> (lsb, width); common header first.
HEADER = {"pop_prev": (3, 1), "pop_next": (4, 1), "push_prev": (5, 1), "push_next": (6, 1)}
MEM = {**HEADER, "mem_type": (7, 3), "sram_base": (10, 16), "dram_base": (26, 32), "y_size": (64, 16),
       "x_size": (80, 16), "x_stride": (96, 16), "y_pad_0": (112, 4), "y_pad_1": (116, 4), "x_pad_0": (120, 4),
       "x_pad_1": (124, 4)}
LOOP = {**HEADER, "uop_bgn": (8, 13), "uop_end": (21, 14), "iter_out": (35, 14), "iter_in": (49, 14),
        "dst_factor_out": (64, 11), "dst_factor_in": (75, 11), "src_factor_out": (86, 11), "src_factor_in": (97, 11)}
SPEC = {
    Load: (0, MEM), Store: (1, MEM), Finish: (3, HEADER),
    Gemm: (2, {**LOOP, "reset": (7, 1), "wgt_factor_out": (108, 10), "wgt_factor_in": (118, 10)}),
    Alu: (4, {**LOOP, "alu_op": (108, 3), "use_imm": (111, 1), "imm": (112, 16)}),
}
UOP_SPEC = {"dst": (0, 11), "src": (11, 11), "wgt": (22, 10)}
ENUM_MAX = {"mem_type": max(MemType), "alu_op": max(AluOp)}

# Bytes derived by hand from the table above (word0 | word1 << 64, little-endian), not produced by the encoder.
HAND = [
    # opcode 1 | pop_prev 1<<3 | push_prev 1<<5 | OUT 4<<7 | sram 5<<10 | dram 0x100<<26 ; y 2 | x 3<<16 | stride 7<<32
    (Store(mem_type=MemType.OUT, sram_base=5, dram_base=0x100, y_size=2, x_size=3, x_stride=7, pop_prev=True,
           push_prev=True), "29160000040000000200030007000000"),
    # push_next 1<<6 | INP 2<<7 | sram 0x123<<10 | dram 0x89abcdef<<26 ; y 8 | x 9<<16 | stride 10<<32 | pads 1,2,3,4
    (Load(mem_type=MemType.INP, sram_base=0x123, dram_base=0x89ABCDEF, y_size=8, x_size=9, x_stride=10,
          y_pad_0=1, y_pad_1=2, x_pad_0=3, x_pad_1=4, push_next=True), "408d04bc37af2602080009000a002143"),
    # 2 | pop_next 1<<4 | push_prev 1<<5 | bgn 3<<8 | end 40<<21 | out 5<<35 | in 6<<49 ;
    # dfo 7 | dfi 1<<11 | sfo 11<<22 | sfi 2<<33 | wfo 13<<44 | wfi 4<<54
    (Gemm(uop_bgn=3, uop_end=40, iter_out=5, iter_in=6, dst_factor_out=7, dst_factor_in=1, src_factor_out=11,
          src_factor_in=2, wgt_factor_out=13, wgt_factor_in=4, pop_next=True, push_prev=True),
     "3203000528000c000708c00204d00001"),
    # 4 | push_next 1<<6 | end 1<<21 | out 1<<35 | in 128<<49 ; dfi 1<<11 | sfi 1<<33 | SHR 3<<44 | imm on 1<<47 |
    # imm -3 = 0xfffd << 48
    (Alu(alu_op=AluOp.SHR, use_imm=True, imm=-3, uop_bgn=0, uop_end=1, iter_in=128, dst_factor_in=1,
         src_factor_in=1, push_next=True), "44002000080000010008000002b0fdff"),
    (Finish(pop_next=True), "13" + "00" * 15),
]


@pytest.mark.parametrize("insn, hexbytes", HAND, ids=[type(insn).__name__ for insn, _ in HAND])
def test_hand_derived_bytes(insn, hexbytes):
    assert encode(insn).hex() == hexbytes
    assert decode(bytes.fromhex(hexbytes)) == insn


def test_hand_derived_uop():
    uop = Uop(dst=5, src=300, wgt=1000)  # 5 | 300<<11 | 1000<<22
    assert encode_uop(uop).hex() == "056009fa"
    assert decode_uop(bytes.fromhex("056009fa")) == uop


@pytest.mark.parametrize("cls", list(SPEC))
def test_each_field_lands_on_its_bits(cls):
    """One field at its largest value, all others zero: exactly its bits (and the opcode) are set."""
    opcode, layout = SPEC[cls]
    zero = {name: 0 for name in layout}
    for name, (lsb, width) in layout.items():
        value = ENUM_MAX.get(name, -1 if name == "imm" else (1 << width) - 1)
        word = int.from_bytes(encode(cls(**{**zero, name: value})), "little")
        top = ENUM_MAX[name] if name in ENUM_MAX else (1 << width) - 1
        assert word == opcode | top << lsb, name


def _random_fields(layout: dict, rng: np.random.Generator) -> dict:
    values = {}
    for name, (_, width) in layout.items():
        if name in ENUM_MAX:
            values[name] = int(rng.integers(0, ENUM_MAX[name] + 1))
        elif name == "imm":
            values[name] = int(rng.integers(-(1 << 15), 1 << 15))
        else:
            values[name] = bool(rng.integers(2)) if width == 1 else int(rng.integers(0, 1 << width))
    return values


@pytest.mark.parametrize("cls", list(SPEC))
def test_random_round_trips(cls):
    rng = np.random.default_rng(7)
    opcode, layout = SPEC[cls]
    for _ in range(500):
        values = _random_fields(layout, rng)
        insn = cls(**values)
        data = encode(insn)
        word = int.from_bytes(data, "little")
        assert word & 7 == opcode
        for name, (lsb, width) in layout.items():
            assert word >> lsb & ((1 << width) - 1) == values[name] & ((1 << width) - 1), name
        assert decode(data) == insn
        assert dataclasses.asdict(decode(data)) == dataclasses.asdict(insn)


def test_uop_round_trips_and_vector_decode():
    rng = np.random.default_rng(3)
    uops = [Uop(**_random_fields(UOP_SPEC, rng)) for _ in range(300)]
    raw = b"".join(encode_uop(u) for u in uops)
    assert [decode_uop(raw[i:i + 4]) for i in range(0, len(raw), 4)] == uops
    dst, src, wgt = uop_fields(np.frombuffer(raw, "<u4"))
    assert list(zip(dst.tolist(), src.tolist(), wgt.tolist())) == [(u.dst, u.src, u.wgt) for u in uops]


@pytest.mark.parametrize("build, field", [
    (lambda: Gemm(uop_bgn=1 << 13, uop_end=0), "uop_bgn"),
    (lambda: Gemm(uop_bgn=0, uop_end=1, wgt_factor_in=1024), "wgt_factor_in"),
    (lambda: Alu(alu_op=AluOp.ADD, uop_bgn=0, uop_end=1, imm=1 << 15), "imm"),
    (lambda: Alu(alu_op=AluOp.ADD, uop_bgn=0, uop_end=1, imm=-(1 << 15) - 1), "imm"),
    (lambda: Load(mem_type=MemType.INP, sram_base=0, dram_base=1 << 32, y_size=1, x_size=1, x_stride=1), "dram_base"),
    (lambda: Load(mem_type=MemType.INP, sram_base=0, dram_base=0, y_size=1, x_size=1, x_stride=1, x_pad_1=16),
     "x_pad_1"),
    (lambda: Store(mem_type=MemType.OUT, sram_base=-1, dram_base=0, y_size=1, x_size=1, x_stride=1), "sram_base"),
    (lambda: Uop(dst=2048, src=0), "dst"),
    (lambda: Uop(dst=0, src=0, wgt=1024), "wgt"),
])
def test_values_that_do_not_fit_name_the_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()


def test_codes_the_hardware_lacks_are_rejected():
    with pytest.raises(ValueError):
        Load(mem_type=5, sram_base=0, dram_base=0, y_size=1, x_size=1, x_stride=1)
    with pytest.raises(ValueError):
        Alu(alu_op=5, uop_bgn=0, uop_end=1)
    assert Load(mem_type=2, sram_base=0, dram_base=0, y_size=1, x_size=1, x_stride=1).mem_type is MemType.INP


@pytest.mark.parametrize("word, message", [
    (5, "unknown opcode 5"),
    (7, "unknown opcode 7"),
    (2 | 1 << 63, "reserved bits"),              # GEMM bit 63 is unused
    (0 | 1 << 60, "reserved bits"),              # LOAD bits 58-63 are unused
    (3 | 1 << 7, "reserved bits"),               # FINISH has only the header
    (4 | 1 << 7, "reserved bits"),               # ALU has no reset bit
    (0 | 5 << 7, "5 is not a valid MemType"),
])
def test_decode_rejects_what_the_hardware_cannot_run(word, message):
    with pytest.raises(ValueError, match=message):
        decode(word.to_bytes(16, "little"))


def test_decode_program_names_the_instruction():
    good = encode_program([Finish(), Finish()])
    with pytest.raises(ProgramError, match="insn 2: unknown opcode 6") as e:
        decode_program(good + (6).to_bytes(16, "little"))
    assert e.value.insn == 2
    with pytest.raises(ProgramError, match="not a multiple of 16"):
        decode_program(good[:-1])
    with pytest.raises(ValueError, match="16 bytes"):
        decode(good[:15])


@pytest.mark.parametrize("name", ["conv3x3_c32_o32_8x8", "conv3x3_c64_o48_6x10", "deadlock_missing_push"])
def test_golden_streams_decode_and_re_encode(golden, name):
    prog, root, _, raw = golden(name)
    insns = decode_program(raw)
    assert encode_program(insns) == raw == (root / "insn.bin").read_bytes()
    assert isinstance(insns[-1], Finish) and insns[-1].pop_next
    assert {type(i) for i in insns} == {Load, Store, Gemm, Alu, Finish}
    uops = (root / "uop.bin").read_bytes()
    assert all(encode_uop(decode_uop(uops[i:i + 4])) == uops[i:i + 4] for i in range(0, len(uops), 4))
