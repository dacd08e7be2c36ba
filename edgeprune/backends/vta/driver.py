"""Host driver for an edgeprune VTA bundle on a Pynq board. UNVERIFIED ON HARDWARE.

Copied into every VTA bundle as driver.py; it needs only numpy, onnxruntime and the board's `pynq` package
(not edgeprune). Usage on the board, in the bundle folder:

    python3 driver.py BITSTREAM.bit input.npy [--timeout SECONDS]

It runs the model's steps in order (manifest.json, build.vta): CPU parts with onnxruntime, VTA parts by
loading each region into a contiguous buffer, relocating every DRAM address in the instruction stream with
the buffers' physical addresses, and launching each layer: instruction count and address to the fetch
module, all four modules started, the compute module's done register polled until it reads 1 or the
timeout passes. Register offsets are those of the tvm-vta HLS design (hardware/xilinx/src/vta.cc); base
addresses come from the target file.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

INSN_BYTES = 16
ELEM_BYTES = {0: 4, 1: 256, 2: 16, 3: 64, 4: 16}  # by memory type: UOP, WGT, INP, ACC, OUT
FETCH_INSN_COUNT, FETCH_INSN_ADDR = 0x10, 0x18
LOAD_INP_ADDR, LOAD_WGT_ADDR = 0x10, 0x18
COMPUTE_DONE, COMPUTE_UOP_ADDR, COMPUTE_BIAS_ADDR = 0x18, 0x20, 0x28
STORE_OUT_ADDR = 0x10
AP_START, AUTO_RESTART = 0x1, 0x81
REG_SPAN = 0x1000


def pack(x: np.ndarray, packed: list[int]) -> np.ndarray:
    """NCHW int8 -> NCHW1n16c, channels zero-padded to whole blocks."""
    _, cb, h, w, _, block = packed
    x = x.reshape(1, -1, h, w).astype(np.int8)
    full = np.zeros((1, cb * block, h, w), np.int8)
    full[:, :x.shape[1]] = x
    return np.ascontiguousarray(full.reshape(1, cb, block, h, w).transpose(0, 1, 3, 4, 2)).view(np.uint8).ravel()


def unpack(raw: np.ndarray, packed: list[int], shape: list[int]) -> np.ndarray:
    _, cb, h, w, _, block = packed
    x = raw.view(np.int8).reshape(1, cb, h, w, block).transpose(0, 1, 4, 2, 3).reshape(1, cb * block, h, w)
    return np.ascontiguousarray(x[:, :shape[1]]).reshape(shape)


def relocate(code: bytes, relocs: list[dict], phys: dict[str, int]) -> np.ndarray:
    """Add each region's physical base (in elements of the instruction's memory type) to its dram_base field."""
    words = bytearray(code)
    for r in relocs:
        at = r["insn"] * INSN_BYTES
        value = int.from_bytes(words[at:at + INSN_BYTES], "little")
        mem = value >> 7 & 0x7
        base = phys[r["region"]]
        if base % ELEM_BYTES[mem]:
            raise RuntimeError(f"region {r['region']} at {base:#x} is not aligned to {ELEM_BYTES[mem]} bytes")
        field = (value >> 26 & 0xFFFFFFFF) + base // ELEM_BYTES[mem]
        value = value & ~(0xFFFFFFFF << 26) | (field & 0xFFFFFFFF) << 26
        words[at:at + INSN_BYTES] = value.to_bytes(INSN_BYTES, "little")
    return np.frombuffer(bytes(words), np.uint8)


class Vta:
    """The four register blocks of one VTA instance."""

    def __init__(self, registers: dict[str, int]) -> None:
        from pynq import MMIO

        self.mmio = {name: MMIO(addr, REG_SPAN) for name, addr in registers.items()}

    def launch(self, insn_phys: int, count: int, timeout: float) -> float:
        """Run `count` instructions from `insn_phys` to FINISH; seconds taken."""
        m = self.mmio
        m["fetch"].write(FETCH_INSN_COUNT, count)
        m["fetch"].write(FETCH_INSN_ADDR, insn_phys)
        for block, offset in (("load", LOAD_INP_ADDR), ("load", LOAD_WGT_ADDR), ("compute", COMPUTE_UOP_ADDR),
                              ("compute", COMPUTE_BIAS_ADDR), ("store", STORE_OUT_ADDR)):
            m[block].write(offset, 0)  # instructions carry global physical addresses
        start = time.perf_counter()
        m["fetch"].write(0, AP_START)
        for block in ("load", "compute", "store"):
            m[block].write(0, AUTO_RESTART)
        while m["compute"].read(COMPUTE_DONE) != 1:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"VTA did not raise done within {timeout} s ({count} instructions)")
        return time.perf_counter() - start


class Part:
    """A VTA part in contiguous buffers, relocated."""

    def __init__(self, folder: Path, meta: dict) -> None:
        from pynq import allocate

        self.meta = meta
        self.buffers = {name: allocate(shape=(max(r["bytes"], 64),), dtype=np.uint8)
                        for name, r in meta["regions"].items()}
        for name, r in meta["regions"].items():
            if "file" in r:
                self.buffers[name][:r["bytes"]] = np.fromfile(folder / r["file"], np.uint8)
                self.buffers[name].flush()
        phys = {name: int(b.physical_address) for name, b in self.buffers.items()}
        code = relocate((folder / meta["insn"]).read_bytes(), json.loads((folder / meta["relocs"]).read_text()), phys)
        self.insn = allocate(shape=(code.size,), dtype=np.uint8)
        self.insn[:] = code
        self.insn.flush()

    def run(self, vta: Vta, env: dict, timeout: float) -> None:
        tensors = self.meta["tensors"]
        for name in self.meta["inputs"]:
            t = tensors[name]
            buf = self.buffers[t["region"]]
            buf[:t["bytes"]] = pack(env[name], t["packed"])
            buf.flush()
        for layer in self.meta["layers"]:
            vta.launch(int(self.insn.physical_address) + INSN_BYTES * layer["insn_offset"], layer["insn_count"],
                       timeout)
        for name in self.meta["outputs"]:
            t = tensors[name]
            buf = self.buffers[t["region"]]
            buf.invalidate()
            env[name] = unpack(np.asarray(buf[:t["bytes"]]), t["packed"], t["shape"])


def run(folder: Path, bitstream: str, feeds: dict, timeout: float = 1.0) -> dict:
    """The model's outputs for `feeds` (input name -> array)."""
    import onnxruntime as ort
    from pynq import Overlay

    info = json.loads((folder / "manifest.json").read_text())["build"]["vta"]
    Overlay(bitstream)
    vta = Vta(info["board"]["registers"])
    steps = {c["step"]: ("cpu", c) for c in info["cpu_parts"]} | {p["step"]: ("vta", p) for p in info["parts"]}
    env = dict(feeds)
    for index in sorted(steps):
        kind, meta = steps[index]
        if kind == "cpu":
            sess = ort.InferenceSession(str(folder / meta["file"]), providers=["CPUExecutionProvider"])
            env.update(zip(meta["outputs"], sess.run(meta["outputs"], {i: env[i] for i in meta["inputs"]})))
        else:
            Part(folder, meta).run(vta, env, timeout)
    return {name: env[name] for name in info["outputs"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bitstream")
    parser.add_argument("input", help=".npy file for the model's (single) input")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each launch's done")
    args = parser.parse_args()
    folder = Path(__file__).resolve().parent
    info = json.loads((folder / "manifest.json").read_text())["build"]["vta"]
    outputs = run(folder, args.bitstream, {info["inputs"][0]: np.load(args.input)}, args.timeout)
    for name, value in outputs.items():
        print(name, value.shape, value.dtype)
        print(value)


if __name__ == "__main__":
    main()
