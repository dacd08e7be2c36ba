"""A VTA part of a model: consecutive layers linked into one instruction stream, its data regions, and back.

On disk (in a bundle), part `vtaN` is: `vtaN.insn.bin` (raw 16-byte instructions in program order, one
FINISH-terminated launch per layer), `vtaN.uop.bin`, `vtaN.wgt.bin`, `vtaN.bias.bin` (packed micro-ops,
OIHW16o16i weights, int32 bias and shift rows), and `vtaN.relocs.json`: every instruction field that holds a
DRAM address, with the region it counts from. The fields hold element offsets inside their region; whoever
places the regions (the Pynq driver with physical addresses, the simulator with offsets in its DRAM image)
adds base / element size. Activations are regions too: one per tensor, int8 NCHW1n16c.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.backends.vta.config import VTAConfig
from edgeprune.backends.vta.isa import Insn, MemType, decode_program, encode_program, encode_uop
from edgeprune.backends.vta.lower import REGION_BUFFER
from edgeprune.backends.vta.pack import pack_activations, unpack_activations
from edgeprune.backends.vta.partition import Layer
from edgeprune.backends.vta.sim import Counters, Simulator

_MEM_BUFFER = {MemType.UOP: "uop", MemType.WGT: "wgt", MemType.INP: "inp", MemType.ACC: "acc", MemType.OUT: "out"}
_CONST_REGIONS = ("uop", "wgt", "bias")
PAGE = 4096  # regions start on page boundaries in the simulator's DRAM image, as contiguous buffers do


def build_part(name: str, layers: list[Layer], config: VTAConfig) -> dict[str, Any]:
    """Lower and link the layers: {"files": {file: bytes}, "meta": what the manifest and a driver need}."""
    insns: list[Insn] = []
    relocs: list[dict[str, Any]] = []
    data = {r: bytearray() for r in _CONST_REGIONS}
    tensors: dict[str, dict[str, Any]] = {}
    described = []
    for layer in layers:
        prog = layer.lower(config)
        names = {region: tensor for region, tensor in zip(prog.inputs, layer.inputs)} | {"out": layer.output}
        for region, tensor in names.items():
            tensors.setdefault(tensor, {"region": f"act{len(tensors)}", "packed": list(prog.packed[region]),
                                        "shape": list(prog.inputs.get(region, prog.out_shape)),
                                        "bytes": int(np.prod(prog.packed[region]))})
        blobs = {"uop": b"".join(encode_uop(u) for u in prog.uops), **{r: a.tobytes() for r, a in prog.consts.items()}}
        offsets = {}  # region -> elements already in the part's region
        for region, blob in blobs.items():
            eb = config.elem_bytes[REGION_BUFFER[region]]
            offsets[region] = len(data[region]) // eb
            data[region] += blob + bytes(-len(blob) % eb)
        start = len(insns)
        linked = list(prog.insns)
        for r in prog.relocs:
            if r.region in offsets:
                linked[r.insn] = replace(linked[r.insn], dram_base=linked[r.insn].dram_base + offsets[r.region])
            region = r.region if r.region in offsets else tensors[names[r.region]]["region"]
            relocs.append({"insn": start + r.insn, "field": r.field, "region": region})
        insns += linked
        described.append(layer.describe() | {"insn_offset": start, "insn_count": len(linked),
                                             "macs": prog.macs, "uops": len(prog.uops)})
    files = {f"{name}.insn.bin": encode_program(insns), f"{name}.relocs.json": json.dumps(relocs, indent=1).encode()}
    regions = {}
    for region in _CONST_REGIONS:
        if data[region]:
            files[f"{name}.{region}.bin"] = bytes(data[region])
            regions[region] = {"file": f"{name}.{region}.bin", "bytes": len(data[region])}
    for tensor, t in tensors.items():
        regions[t["region"]] = {"tensor": tensor, "bytes": t["bytes"]}
    produced = {l.output for l in layers}
    meta = {"name": name, "insn": f"{name}.insn.bin", "insn_count": len(insns), "relocs": f"{name}.relocs.json",
            "regions": regions, "tensors": tensors, "layers": described,
            "inputs": [t for t in tensors if t not in produced], "outputs": [l.output for l in layers]}
    return {"files": files, "meta": meta}


@dataclass
class RunStats:
    """Counters of every launch of a part, for the profile report and the timing model."""

    launches: list[tuple[str, Counters]]


class PartImage:
    """A part read back from a bundle into a simulator DRAM image, every region on its own page."""

    def __init__(self, folder: Path, meta: dict[str, Any], config: VTAConfig) -> None:
        self.meta, self.config = meta, config
        self.base, end = {}, PAGE
        for region, r in meta["regions"].items():
            self.base[region], end = end, end + -(-r["bytes"] // PAGE) * PAGE
        self.dram = np.zeros(end, np.uint8)
        for region, r in meta["regions"].items():
            if "file" in r:
                raw = np.fromfile(folder / r["file"], np.uint8)
                self.dram[self.base[region]:self.base[region] + raw.size] = raw
        insns = decode_program((folder / meta["insn"]).read_bytes())
        for r in json.loads((folder / meta["relocs"]).read_text()):
            insn = insns[r["insn"]]
            eb = config.elem_bytes[_MEM_BUFFER[insn.mem_type]]
            insns[r["insn"]] = replace(insn, **{r["field"]: getattr(insn, r["field"]) + self.base[r["region"]] // eb})
        self.insns = insns
        self.sim = Simulator(self.dram, config)

    def _view(self, tensor: str) -> np.ndarray:
        t = self.meta["tensors"][tensor]
        start = self.base[t["region"]]
        return self.dram[start:start + t["bytes"]]

    def run(self, env: dict[str, np.ndarray]) -> RunStats:
        """Pack the part's inputs, run each layer's launch to FINISH (portable: any lint raises), unpack outputs."""
        for tensor in self.meta["inputs"]:
            t = self.meta["tensors"][tensor]
            x = env[tensor].reshape(1, t["shape"][1], t["packed"][2], t["packed"][3])
            self._view(tensor)[:] = pack_activations(x, self.config.block_in).view(np.uint8).ravel()
        launches = []
        for layer in self.meta["layers"]:
            start = layer["insn_offset"]
            result = self.sim.run(self.insns[start:start + layer["insn_count"]])
            launches.append((layer["name"], result.counters))
        for tensor in self.meta["outputs"]:
            t = self.meta["tensors"][tensor]
            packed = self._view(tensor).view(np.int8).reshape(t["packed"])
            env[tensor] = unpack_activations(packed, t["shape"][1]).reshape(t["shape"])
        return RunStats(launches)
