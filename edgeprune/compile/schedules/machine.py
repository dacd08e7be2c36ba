"""What the schedules need to know about the CPU: vector lanes, vector registers, int8 dot instructions,
float64 vectors."""
from __future__ import annotations

from dataclasses import dataclass

from edgeprune.targets import Target


@dataclass(frozen=True)
class Machine:
    """Tile sizes follow from the first two; `pair_dot` names the int16-pair tensor intrinsic, if any;
    `float64` says float64 vector arithmetic is native (requant.py)."""

    vector_bits: int
    registers: int
    pair_dot: str | None = None
    float64: bool = False

    @property
    def lanes(self) -> int:
        """float32 elements per vector (`kinds` only hands float32 functions to the rules)."""
        return max(1, self.vector_bits // 32)


def machine_for(target: Target) -> Machine:
    """AVX-512 and AArch64 have 32 vector registers; AVX2 and 32-bit NEON have 16. x86 with AVX2 or AVX-512
    has pmaddwd; on ARM, LLVM makes smlal of the plain widening loop, so there is no intrinsic to name.
    x86-64 and AArch64 vectors hold float64; 32-bit NEON does not."""
    import platform

    from edgeprune.compile.schedules.intrinsics import pair_dot, pixel_pair_dot

    bits = target.vector_bits
    arch = (target.tvm.get("mtriple") or platform.machine()).lower()
    x86, arm64 = arch.startswith(("x86_64", "amd64")), arch.startswith(("aarch64", "arm64"))
    if x86:  # registered before a tuning database's traces (which may name it) are replayed
        pixel_pair_dot(bits)
    return Machine(bits, 32 if bits >= 512 or arm64 else 16, pair_dot(bits) if x86 else None, x86 or arm64)
