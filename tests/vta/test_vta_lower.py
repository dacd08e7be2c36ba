"""Lowering of conv2d and dense layers: compiled, simulated in portable mode (which raises on any race,
deadlock, bounds or portability finding), and compared bit for bit with the integer reference."""
from __future__ import annotations

import numpy as np
import pytest

from edgeprune.backends.vta.config import VTAConfig
from edgeprune.backends.vta.isa import Alu, AluOp, Gemm, Load, MemType, Store, decode_program
from edgeprune.backends.vta.lower import (Program, lower_conv2d, lower_dense, reference_conv2d, reference_dense,
                                          simulate)
from edgeprune.backends.vta.pack import (pack_activations, pack_bias, pack_weights, unpack_activations)
from edgeprune.backends.vta.sim import Simulator
from edgeprune.errors import UserError

from .test_vta_sim_golden import CONVS

# Small buffers (128 inputs, 128 weight blocks, 128 accumulator rows, 1024 micro-ops) make small layers need
# several tiles and reduction chunks, so multi-tile schedules are tested in little simulation time.
SMALL = VTAConfig(log_inp_buff_size=11, log_wgt_buff_size=15, log_acc_buff_size=13, log_uop_buff_size=12)


def random_layer(rng, o: int, c: int, k: int | None, wide_bias: bool = False):
    shape = (o, c) if k is None else (o, c, k, k)
    w = rng.integers(-128, 128, shape).astype(np.int8)
    span = 1 << 31 if wide_bias else 1 << 14
    return w, rng.integers(-span, span, o).astype(np.int32)


def check(prog: Program, x: np.ndarray, expect: np.ndarray):
    y, result = simulate(prog, x)  # portable: any lint raises
    assert result.lints == []
    assert y.dtype == np.int8 and y.shape == expect.shape
    np.testing.assert_array_equal(y, expect)
    n = result.counters
    assert n.gemm_macs >= prog.macs
    assert n.bytes_stored == prog.sizes()["out"]  # every output element is stored exactly once
    assert n.bytes_loaded["inp"] > 0 and n.bytes_loaded["wgt"] >= prog.sizes()["wgt"]  # strides may skip inputs
    assert n.insns["FINISH"] == 1 and n.insns["STORE"] >= 1
    return result


def run_conv(rng, c, o, hw, k, stride, pad, shift, relu, config=VTAConfig(), wide_bias=False):
    x = rng.integers(-128, 128, (1, c, *hw)).astype(np.int8)
    w, b = random_layer(rng, o, c, k, wide_bias)
    prog = lower_conv2d(w, b, hw, stride, pad, shift, relu, config)
    return prog, check(prog, x, reference_conv2d(x, w, b, stride, pad, shift, relu))


# -- packing --------------------------------------------------------------------------------------------------

def test_packing_layouts_and_round_trip():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, 17, 3, 5)).astype(np.int8)
    p = pack_activations(x, 16)
    assert p.shape == (1, 2, 3, 5, 1, 16)
    assert p[0, 1, 2, 4, 0, 0] == x[0, 16, 2, 4] and not p[0, 1, :, :, :, 1:].any()  # padded channels are zero
    np.testing.assert_array_equal(unpack_activations(p, 17), x)
    w = rng.integers(-128, 128, (20, 3, 3, 3)).astype(np.int8)
    pw = pack_weights(w, 16, 16)
    assert pw.shape == (2, 1, 3, 3, 16, 16)
    assert pw[1, 0, 2, 1, 3, 2] == w[19, 2, 2, 1] and not pw[1, 0, :, :, 4:].any() and not pw[:, :, :, :, :, 3:].any()
    pb = pack_bias(np.arange(20, dtype=np.int32), 16)
    assert pb.shape == (2, 1, 16) and pb[1, 0, 3] == 19 and not pb[1, 0, 4:].any()


# -- the reference --------------------------------------------------------------------------------------------

def test_reference_requantizes_with_floor_shift_and_saturation():
    w = np.array([[1], [1], [1], [1], [1]], np.int8)
    b = np.array([-3, 300, -300, 255, 2**31 - 1], np.int32)
    x = np.zeros((1, 1), np.int8)
    assert reference_dense(x, w, b, 1).tolist() == [[-2, 127, -128, 127, 127]]
    assert reference_dense(x, w, b, 1, relu=True).tolist() == [[0, 127, 0, 127, 127]]
    # int32 wrap-around, as the hardware's adds: INT32_MAX + 1 is INT32_MIN
    assert reference_dense(np.ones((1, 1), np.int8), w, b, 31).tolist() == [[-1, 0, -1, 0, -1]]


def test_reference_conv_matches_a_direct_loop():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (1, 3, 6, 7)).astype(np.int8)
    w, b = random_layer(rng, 4, 3, 3)
    y = reference_conv2d(x, w, b, stride=2, pad=1, shift=6)
    xp = np.pad(x[0].astype(np.int64), ((0, 0), (1, 1), (1, 1)))
    for o, i, j in np.ndindex(*y.shape[1:]):
        acc = int((xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * w[o]).sum()) + int(b[o])
        assert y[0, o, i, j] == np.clip(acc >> 6, -128, 127)


# -- conv2d ---------------------------------------------------------------------------------------------------

def test_golden_vectors_through_the_lowering(golden):
    """Our compiled program on the upstream vectors' data reproduces the upstream simulator's bytes (which clip
    at -127; ours at -128, the int8 range the quantizer's QuantizeLinear uses)."""
    for name, (c, o, h, w, shift) in CONVS.items():
        vector, root, _, _ = golden(name)
        raw = {r: (root / f"{r}.bin").read_bytes() for r in ("inp", "wgt", "bias")}
        x = unpack_activations(np.frombuffer(raw["inp"], np.int8).reshape(1, c // 16, h, w, 1, 16), c)
        k = np.frombuffer(raw["wgt"], np.int8).reshape(o // 16, c // 16, 3, 3, 16, 16)
        k = np.ascontiguousarray(k.transpose(0, 4, 1, 5, 2, 3).reshape(o, c, 3, 3))
        compiled = lower_conv2d(k, np.frombuffer(raw["bias"], "<i4").astype(np.int32), (h, w), 1, 1, shift)
        y, _ = simulate(compiled, x)
        expect = np.frombuffer((root / vector["output"]["file"]).read_bytes(), np.int8)
        assert pack_activations(np.maximum(y, -127), 16).tobytes() == expect.tobytes()


CASES = [  # c, o, (h, w), kernel, stride, pad, shift, relu
    (3, 17, (9, 11), 3, 2, 1, 8, True),
    (17, 40, (10, 10), 1, 2, 0, 7, False),
    (40, 20, (12, 7), 5, 1, 2, 12, False),
    (16, 16, (5, 5), 5, 1, 3, 9, True),
    (33, 5, (7, 4), 3, 1, 0, 0, False),
    (20, 36, (6, 9), 3, 2, 2, 16, True),
    (40, 5, (6, 1), 3, 1, 1, 9, False),  # a one-column output of one block: the GEMM's inner loop walks columns
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "c{}o{}_{}x{}_k{}s{}p{}".format(*c[:2], *c[2], *c[3:6]))
def test_conv_targeted(case):
    c, o, hw, k, stride, pad, shift, relu = case
    run_conv(np.random.default_rng(CASES.index(case)), c, o, hw, k, stride, pad, shift, relu)


@pytest.mark.parametrize("seed", range(24))
def test_conv_random(seed):
    rng = np.random.default_rng(100 + seed)
    k = int(rng.choice([1, 3, 5]))
    pad = int(rng.integers(0, min(k, 4)))
    hw = tuple(int(v) for v in rng.integers(max(1, k - 2 * pad), 14, 2))
    config = SMALL if seed % 2 else VTAConfig()
    run_conv(rng, int(rng.integers(1, 50)), int(rng.integers(1, 50)), hw, k, int(rng.integers(1, 3)), pad,
             int(rng.integers(0, 20)), bool(rng.integers(2)), config, wide_bias=seed == 3)


def test_conv_over_many_tiles_double_buffers_with_tokens():
    """Tiles and reduction chunks are pipelined: each slot is reused only after the token that frees it."""
    # 8 input blocks of a 3x3 kernel cannot fit twice in 128 inputs, 3 x 13 x 13 outputs not in 128 rows
    prog, _ = run_conv(np.random.default_rng(7), 128, 40, (13, 13), 3, 1, 1, 10, True, SMALL)
    t = prog.tiling
    assert t.tiles >= 3 and t.chunks >= 2 * t.tiles  # several output tiles, the reduction split in chunks
    insns = prog.insns
    gemms = [i for i in insns if isinstance(i, Gemm) and not i.reset]
    inp_wgt = [i for i in insns if isinstance(i, Load) and i.mem_type in (MemType.INP, MemType.WGT)]
    resets = [i for i in insns if isinstance(i, Gemm) and i.reset]
    assert len(gemms) == t.chunks and all(g.pop_prev for g in gemms)
    # compute frees a slot for the load two chunks later; the load waits for exactly those tokens
    assert sum(g.push_prev for g in gemms) == sum(i.pop_next for i in inp_wgt) == t.chunks - 2
    assert sum(i.push_next for i in inp_wgt) == t.chunks
    # output tiles alternate two accumulator slots: a reset waits for the store of two tiles before
    assert sum(r.pop_next for r in resets) == t.tiles - 2
    assert len({r.uop_bgn for r in resets}) == 2


def test_weights_that_fit_stay_in_place_across_tiles():
    prog, result = run_conv(np.random.default_rng(10), 16, 16, (64, 64), 1, 1, 0, 6, False)
    assert prog.tiling.tiles >= 3 and prog.tiling.chunks == prog.tiling.tiles
    assert result.counters.bytes_loaded["wgt"] == 2 * prog.sizes()["wgt"]  # once into each slot


def test_large_layer_fits_the_default_buffers():
    prog, _ = run_conv(np.random.default_rng(8), 96, 64, (20, 20), 3, 1, 1, 13, False)
    assert prog.tiling.tiles >= 2
    depth = prog.config.depth
    assert len(prog.uops) <= depth["uop"]


def test_long_shifts_are_split_for_the_hardware():
    prog, _ = run_conv(np.random.default_rng(9), 8, 8, (4, 4), 3, 1, 1, 31, False, wide_bias=True)
    shifts = [i.imm for i in prog.insns if isinstance(i, Alu) and i.alu_op == AluOp.SHR]
    assert shifts == [15, 15, 1]
    assert not any(isinstance(i, Alu) and i.alu_op == AluOp.MUL for i in prog.insns)


@pytest.mark.parametrize("change, message", [
    (dict(pad=3), "padding 3 with a 3x3 kernel"),
    (dict(shift=32), "shift 32"),
    (dict(stride=0), "stride 0"),
    (dict(in_hw=(1, 1), pad=0), "has no output"),
])
def test_conv_rejects_what_it_cannot_lower(change, message):
    args = dict(w_q=np.zeros((4, 4, 3, 3), np.int8), bias=np.zeros(4, np.int32), in_hw=(5, 5), pad=1) | change
    with pytest.raises(UserError, match=message):
        lower_conv2d(**args)


def test_a_kernel_the_weight_buffer_cannot_hold_twice_is_a_user_error():
    with pytest.raises(UserError, match="does not fit the VTA buffers of 1x16_i8w8a32_15_15_13_17"):
        lower_conv2d(np.zeros((4, 4, 5, 5), np.int8), np.zeros(4, np.int32), (8, 8),
                     config=VTAConfig(log_wgt_buff_size=13))  # 32 weight blocks < 2 x 25


def test_bad_tensors_are_user_errors():
    with pytest.raises(UserError, match="int8"):
        lower_dense(np.zeros((4, 4), np.float32), np.zeros(4, np.int32))
    with pytest.raises(UserError, match=r"int32 of shape \(4,\)"):
        lower_dense(np.zeros((4, 4), np.int8), np.zeros(5, np.int32))


# -- dense ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("c, o, config", [
    (3, 10, VTAConfig()),
    (300, 10, VTAConfig()),  # one output block, many reduction blocks: two partial rows (no back-to-back writes)
    (40, 100, VTAConfig()),
    (250, 70, SMALL),  # several output tiles and reduction chunks
])
def test_dense(c, o, config):
    rng = np.random.default_rng(c * 1000 + o)
    x = rng.integers(-128, 128, (1, c)).astype(np.int8)
    w, b = random_layer(rng, o, c, None)
    for shift, relu in ((9, False), (12, True)):
        prog = lower_dense(w, b, shift, relu, config)
        check(prog, x, reference_dense(x, w, b, shift, relu))


# -- relocation -----------------------------------------------------------------------------------------------

def test_regions_can_be_placed_anywhere():
    rng = np.random.default_rng(12)
    x = rng.integers(-128, 128, (1, 20, 6, 6)).astype(np.int8)
    w, b = random_layer(rng, 24, 20, 3)
    prog = lower_conv2d(w, b, (6, 6), 1, 1, 9, True, SMALL)
    img = prog.image(x)
    assert all(r.offset % r.align == 0 for r in img.layout.values()) and img.layout["wgt"].align == 256
    assert decode_program(img.insn) == prog.insns
    insn = img.layout["insn"]
    assert decode_program(img.dram[insn.offset:insn.offset + insn.size].tobytes()) == \
        prog.link({name: r.offset for name, r in img.layout.items()})
    # every LOAD and STORE that moves data is relocated, nothing else is
    assert sorted(r.insn for r in img.relocs) == [i for i, op in enumerate(prog.insns)
                                                  if isinstance(op, (Load, Store)) and op.x_size]

    # move every region to a different, shuffled place in a larger DRAM
    bases, end = {}, 0x1000
    for name in ("out", "bias", "inp", "uop", "wgt"):
        bases[name], end = end, end + (img.layout[name].size + 0x3ff) // 0x400 * 0x400 + 0x400
    dram = np.zeros(end, np.uint8)
    for name, base in bases.items():
        r = img.layout[name]
        dram[base:base + r.size] = img.dram[r.offset:r.offset + r.size]
    Simulator(dram, SMALL).run(prog.link(bases))
    out = dram[bases["out"]:bases["out"] + img.layout["out"].size]
    np.testing.assert_array_equal(prog.unpack_output(out), reference_conv2d(x, w, b, 1, 1, 9, True))
    with pytest.raises(ValueError, match="not aligned"):
        prog.link(bases | {"wgt": bases["wgt"] + 16})


# -- per-channel shifts and chained requantization stages -----------------------------------------------------

@pytest.mark.parametrize("config", [VTAConfig(), SMALL], ids=["default", "small"])
def test_per_channel_shifts_and_stages(config):
    """Per-channel weight scales give one shift per output channel: accumulator rows that ALU SHR reads; shifts
    past 15 bits take two rows. Further stages (a fused ReLU, a rescale) round half up."""
    rng = np.random.default_rng(77)
    for c, o, hw, k, stride, pad in ((20, 37, (9, 7), 3, 2, 1), (16, 16, (8, 8), 1, 1, 0), (5, 33, (6, 6), 5, 1, 2)):
        x = rng.integers(-128, 128, (1, c, *hw)).astype(np.int8)
        w, b = random_layer(rng, o, c, k)
        shift = rng.integers(3, 26, o)
        for then in ([], [(1, True)], [(-1, False), (2, False)]):
            prog = lower_conv2d(w, b, hw, stride, pad, shift, False, config, then)
            check(prog, x, reference_conv2d(x, w, b, stride, pad, shift, False, then))
            shr_rows = [i for i in prog.insns if isinstance(i, Alu) and i.alu_op == AluOp.SHR and not i.use_imm]
            assert len(shr_rows) == 2 * prog.tiling.tiles  # 25 > 15 bits: two rows per tile
        xd = rng.integers(-128, 128, (1, c)).astype(np.int8)
        wd, bd = random_layer(rng, o, c, None)
        check(lower_dense(wd, bd, shift, True, config), xd, reference_dense(xd, wd, bd, shift, True))


def test_round_half_to_even_matches_numpy():
    """The shift-add-MAX formulation on VTA against numpy's own round half to even, ties included."""
    from edgeprune.backends.vta.lower import round_shift

    acc = np.arange(-5000, 5000, dtype=np.int64)
    for s in (1, 2, 3, 7, 12):
        np.testing.assert_array_equal(round_shift(acc, s), np.round(acc / 2.0**s).astype(np.int64))


@pytest.mark.parametrize("config", [VTAConfig(), SMALL], ids=["default", "small"])
def test_rounding_conv_and_dense(config):
    """round_first: the layer's shift rounds half to even (scratch rows, per-channel increment rows)."""
    rng = np.random.default_rng(78)
    for c, o, hw, k, stride, pad in ((20, 37, (9, 7), 3, 2, 1), (16, 16, (8, 8), 1, 1, 0)):
        x = rng.integers(-128, 128, (1, c, *hw)).astype(np.int8)
        w, b = random_layer(rng, o, c, k)
        for shift in (9, rng.integers(0, 20, o)):  # per-channel with some channels not shifted at all
            for then in ([], [(1, True)]):
                prog = lower_conv2d(w, b, hw, stride, pad, shift, False, config, then, round_first=True)
                check(prog, x, reference_conv2d(x, w, b, stride, pad, shift, False, then, round_first=True))
        xd = rng.integers(-128, 128, (1, c)).astype(np.int8)
        wd, bd = random_layer(rng, o, c, None)
        check(lower_dense(wd, bd, 11, True, config, round_first=True), xd,
              reference_dense(xd, wd, bd, 11, True, round_first=True))


def test_timing_is_the_critical_path_through_the_tokens():
    """Double buffering overlaps the queues: the estimate lies between the busiest queue and all work in series."""
    from edgeprune.backends.vta.sim import _CYCLES, ISSUE_CYCLES, queue_of

    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (1, 40, 12, 12)).astype(np.int8)
    w, b = random_layer(rng, 40, 40, 3)
    prog = lower_conv2d(w, b, (12, 12), 1, 1, 10, True, SMALL)
    assert prog.tiling.tiles >= 3
    _, result = simulate(prog, x)
    busy = {"load": 0, "compute": 0, "store": 0}
    for insn in prog.insns:
        busy[queue_of(insn)] += ISSUE_CYCLES + _CYCLES[type(insn)](insn, SMALL)
    assert max(busy.values()) <= result.counters.cycles < sum(busy.values())
