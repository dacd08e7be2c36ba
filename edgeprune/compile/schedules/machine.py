"""What the schedules need to know about the CPU: vector lanes, vector registers."""
from __future__ import annotations

from dataclasses import dataclass

from edgeprune.targets import Target


@dataclass(frozen=True)
class Machine:
    """Tile sizes follow from these two numbers; everything else is left to LLVM."""

    vector_bits: int
    registers: int

    @property
    def lanes(self) -> int:
        """float32 elements per vector (`kinds` only hands float32 functions to the rules)."""
        return max(1, self.vector_bits // 32)


def machine_for(target: Target) -> Machine:
    """AVX-512 and AArch64 have 32 vector registers; AVX2 and 32-bit NEON have 16."""
    import platform

    bits = target.vector_bits
    arch = (target.tvm.get("mtriple") or platform.machine()).lower()
    return Machine(bits, 32 if bits >= 512 or arch.startswith(("aarch64", "arm64")) else 16)
