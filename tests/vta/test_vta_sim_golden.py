"""The conformance vectors: our simulator must reproduce the upstream simulator byte for byte."""
from __future__ import annotations

import numpy as np
import pytest

from edgeprune.backends.vta.sim import DeadlockError, Simulator

CONVS = {  # folder: (C, O, H, W, shift), from program.json's description
    "conv3x3_c32_o32_8x8": (32, 32, 8, 8, 10),
    "conv3x3_c64_o48_6x10": (64, 48, 6, 10, 11),
}


def conv_reference(inp: bytes, wgt: bytes, bias: bytes, c: int, o: int, h: int, w: int, shift: int) -> bytes:
    """3x3 conv, pad 1, + bias, >> shift, clip to int8, in the layouts VTA.md names (NCHW1n16c, OIHW16o16i)."""
    x = np.frombuffer(inp, np.int8).reshape(c // 16, h, w, 16).transpose(0, 3, 1, 2).reshape(c, h, w)
    k = np.frombuffer(wgt, np.int8).reshape(o // 16, c // 16, 3, 3, 16, 16)
    k = k.transpose(0, 4, 1, 5, 2, 3).reshape(o, c, 3, 3).astype(np.int64)
    xp = np.pad(x.astype(np.int64), ((0, 0), (1, 1), (1, 1)))
    acc = sum(np.einsum("oc,chw->ohw", k[:, :, dy, dx], xp[:, dy:dy + h, dx:dx + w])
              for dy in range(3) for dx in range(3))
    acc = acc + np.frombuffer(bias, "<i4")[:, None, None]
    y = np.clip(acc >> shift, -127, 127).astype(np.int8)
    return y.reshape(o // 16, 16, h, w).transpose(0, 2, 3, 1).tobytes()


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_vectors_bit_exact(golden, name):
    prog, root, dram, program = golden(name)
    result = Simulator(dram).run(program)
    out = prog["output"]
    assert dram[out["phys"]:out["phys"] + out["bytes"]].tobytes() == (root / out["file"]).read_bytes()
    c, o, h, w, _ = CONVS[name]
    n = result.counters
    assert n.gemm_macs == c * o * h * w * 9
    assert n.bytes_stored == out["bytes"]
    assert n.bytes_loaded == {b: prog["regions"][r]["bytes"]
                              for b, r in (("uop", "uop"), ("inp", "inp"), ("wgt", "wgt"), ("acc", "bias"))}
    assert n.insns["FINISH"] == 1 and sum(n.insns.values()) == prog["insn_count"]
    assert result.lints == []


@pytest.mark.parametrize("name", list(CONVS))
def test_the_conv_reference_agrees_with_the_vectors(golden, name):
    """Validates the reference used below on random data: it must give the upstream bytes too."""
    prog, root, _, _ = golden(name)
    files = [(root / f"{r}.bin").read_bytes() for r in ("inp", "wgt", "bias")]
    assert conv_reference(*files, *CONVS[name]) == (root / prog["output"]["file"]).read_bytes()


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_programs_on_random_data(golden, name):
    """The same instruction streams on fresh data, including extreme values, against numpy."""
    prog, _, dram, program = golden(name)
    rng = np.random.default_rng(11)
    data = {}
    for region, dtype, lo, hi in (("inp", np.int8, -128, 128), ("wgt", np.int8, -128, 128),
                                  ("bias", np.int32, -(1 << 20), 1 << 20)):
        r = prog["regions"][region]
        values = rng.integers(lo, hi, r["bytes"] // np.dtype(dtype).itemsize).astype(dtype)
        data[region] = values.tobytes()
        dram[r["phys"]:r["phys"] + r["bytes"]] = np.frombuffer(data[region], np.uint8)
    Simulator(dram).run(program)
    out = prog["output"]
    expect = conv_reference(data["inp"], data["wgt"], data["bias"], *CONVS[name])
    assert dram[out["phys"]:out["phys"] + out["bytes"]].tobytes() == expect


def test_deadlock_vector_is_reported(golden):
    prog, _, dram, program = golden("deadlock_missing_push")
    assert prog["expect"] == "deadlock"
    with pytest.raises(DeadlockError) as e:
        Simulator(dram).run(program)
    assert e.value.blocked == {"compute": (6, "load->compute"), "store": (11, "compute->store")}
    message = str(e.value)
    assert "deadlock after 6 of 13 instructions" in message
    assert "the compute queue waits at insn 6 (GEMM) for a load->compute token" in message
