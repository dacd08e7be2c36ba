"""Tensor intrinsics for the int8 kernels: int16 x int8 pairs summed into int32 lanes in one instruction.

The integer lowering feeds convs and dense layers int16(x - zx) and int8 weights. x86's pmaddwd
multiplies 16-bit pairs and adds each pair into one 32-bit lane: exact (|x - zx| <= 255, |w| <= 128,
so a pair sum fits 18 bits) and 2 multiply-adds per lane per instruction, where the plain widening
loop takes a 32-bit multiply (vpmulld, 10 cycles of latency on AVX2 parts) and an add per lane.
The schedule lays the two reduction elements of each lane side by side: the data pair is one 32-bit
word broadcast to every lane, the weights are `lanes x 2` adjacent int8 (packed at compile time),
widened to int16 in the register. `pixel_pair_dot` swaps the roles for pointwise.py (pixels in the lanes):
`lanes` pixels' channel pairs are one vector load, and the weight pair is broadcast.
"""
from __future__ import annotations

from functools import lru_cache

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

# vector bits -> the LLVM intrinsic (int16 x 2*lanes, int16 x 2*lanes) -> int32 x lanes
PAIR_DOT = {
    256: "llvm.x86.avx2.pmadd.wd",
    512: "llvm.x86.avx512.pmaddw.d.512",
}


@lru_cache(maxsize=None)
def pair_dot(vector_bits: int) -> str | None:
    """Register (once) and name the pair intrinsic for x86 vectors of this width; None where there is none."""
    llvm_name = PAIR_DOT.get(vector_bits)
    if llvm_name is None:
        return None
    lanes = vector_bits // 32

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((2,), "int16", offset_factor=1), b: T.Buffer((lanes, 2), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:2], b[0:lanes, 0:2])
            T.writes(c[0:lanes])
            for i, k in T.grid(lanes, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    c[vi] = c[vi] + T.Cast("int32", a[vk]) * T.Cast("int32", b[vi, vk])

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((2,), "int16", offset_factor=1), b: T.Buffer((lanes, 2), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:2], b[0:lanes, 0:2])
            T.writes(c[0:lanes])
            c[T.ramp(0, 1, lanes)] = c.vload([0], f"int32x{lanes}") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                T.reinterpret(T.broadcast(T.reinterpret(a.vload([0], "int16x2"), dtype="int32"), lanes),
                              dtype=f"int16x{2 * lanes}"),  # the data pair in every lane
                T.Cast(f"int16x{2 * lanes}", b.vload([0, 0], f"int8x{2 * lanes}")),
                dtype=f"int32x{lanes}")

    name = f"edgeprune_pair_dot_{lanes}x2_i16i8i32"
    TensorIntrin.register(name, desc, impl, override=True)
    return name


@lru_cache(maxsize=None)
def pixel_pair_dot(vector_bits: int) -> str | None:
    """The same instruction with pixels in the lanes: c[i] += a[i, 0] * b[0] + a[i, 1] * b[1]."""
    llvm_name = PAIR_DOT.get(vector_bits)
    if llvm_name is None:
        return None
    lanes = vector_bits // 32

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((lanes, 2), "int16", offset_factor=1), b: T.Buffer((2,), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:lanes, 0:2], b[0:2])
            T.writes(c[0:lanes])
            for i, k in T.grid(lanes, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    c[vi] = c[vi] + T.Cast("int32", a[vi, vk]) * T.Cast("int32", b[vk])

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((lanes, 2), "int16", offset_factor=1), b: T.Buffer((2,), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:lanes, 0:2], b[0:2])
            T.writes(c[0:lanes])
            c[T.ramp(0, 1, lanes)] = c.vload([0], f"int32x{lanes}") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                a.vload([0, 0], f"int16x{2 * lanes}"),
                T.reinterpret(T.broadcast(T.reinterpret(T.Cast("int16x2", b.vload([0], "int8x2")), dtype="int32"),
                                          lanes), dtype=f"int16x{2 * lanes}"),  # the weight pair in every lane
                dtype=f"int32x{lanes}")

    name = f"edgeprune_pixel_pair_dot_{lanes}x2_i16i8i32"
    TensorIntrin.register(name, desc, impl, override=True)
    return name
