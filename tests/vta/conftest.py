"""A test bench for hand-built VTA programs, and access to the shared conformance vectors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeprune.backends.vta.config import VTAConfig
from edgeprune.backends.vta.isa import Load, MemType, Uop, encode_uop
from edgeprune.backends.vta.sim import Simulator

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "vta-golden"
CONFIG = VTAConfig()


@pytest.fixture
def golden():
    """Load a conformance vector into a fresh DRAM: (program.json, folder, dram, instruction bytes)."""
    if not GOLDEN.is_dir():
        pytest.skip(f"conformance vectors not found at {GOLDEN} (they live in the shared folder beside the repo)")

    def load(name: str) -> tuple[dict, Path, np.ndarray, bytes]:
        root = GOLDEN / name
        prog = json.loads((root / "program.json").read_text())
        areas = list(prog["regions"].values()) + [prog.get("output", {"phys": 0, "bytes": 0})]
        dram = np.zeros(max(a["phys"] + a["bytes"] for a in areas), np.uint8)
        for region in prog["regions"].values():
            data = np.fromfile(root / region["file"], np.uint8)
            assert data.size == region["bytes"]
            dram[region["phys"]:region["phys"] + data.size] = data
        insn = prog["regions"][prog["insn_region"]]
        return prog, root, dram, dram[insn["phys"]:insn["phys"] + 16 * prog["insn_count"]].tobytes()

    return load


class Bench:
    """1 MiB of DRAM with one area per memory type, so a test writes data and instructions, not addresses."""

    AREA = {MemType.UOP: 0x0, MemType.INP: 0x10000, MemType.ACC: 0x18000, MemType.WGT: 0x20000,
            MemType.OUT: 0x60000}  # room for 16384 micro-ops, 2048 inputs, 512 acc rows, 1024 weight blocks
    NAME = {MemType.UOP: "uop", MemType.INP: "inp", MemType.WGT: "wgt", MemType.ACC: "acc", MemType.OUT: "out"}

    def __init__(self) -> None:
        self.dram = np.zeros(1 << 20, np.uint8)
        self.sim = Simulator(self.dram)

    def base(self, mem: MemType, element: int = 0) -> int:
        """dram_base of an element of the area for `mem`."""
        return self.AREA[mem] // CONFIG.elem_bytes[self.NAME[mem]] + element

    def put(self, mem: MemType, data: np.ndarray | list[Uop]) -> None:
        raw = (np.frombuffer(b"".join(encode_uop(u) for u in data), np.uint8) if isinstance(data, list)
               else np.ascontiguousarray(data).view(np.uint8).ravel())
        self.dram[self.AREA[mem]:self.AREA[mem] + raw.size] = raw

    def load(self, mem: MemType, n: int, sram: int = 0, element: int = 0, **flags: bool) -> Load:
        """A 1-D LOAD of n elements."""
        return Load(mem_type=mem, sram_base=sram, dram_base=self.base(mem, element), y_size=1, x_size=n,
                    x_stride=n, **flags)

    def out(self, n: int) -> np.ndarray:
        """The first n output elements, as int8 (n, block_out)."""
        start = self.AREA[MemType.OUT]
        return self.dram[start:start + n * CONFIG.block_out].view(np.int8).reshape(n, CONFIG.block_out)


@pytest.fixture
def bench() -> Bench:
    return Bench()
