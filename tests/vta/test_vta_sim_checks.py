"""Hand-built programs: a correct one, then one change at a time to trigger each check of the simulator."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from edgeprune.backends.vta.isa import Alu, AluOp, Finish, Gemm, Insn, Load, MemType, ProgramError, Store, Uop
from edgeprune.backends.vta.sim import (BoundsError, DeadlockError, PortabilityError, RaceError, SyncError,
                                        queue_of)

INT32 = np.iinfo(np.int32)


def wrap32(v: int) -> int:
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


def dense(bench, x: np.ndarray, w: np.ndarray, shift: int) -> list[Insn]:
    """y = clip((w @ x) >> shift) for 32 inputs and 32 outputs: two blocks each, reduction on the outer loop."""
    bench.put(MemType.INP, x.astype(np.int8))
    # OIHW16o16i for a 1x1 kernel: element ob*2+ib is w[ob*16:(ob+1)*16, ib*16:(ib+1)*16], out-major.
    bench.put(MemType.WGT, w.astype(np.int8).reshape(2, 16, 2, 16).transpose(0, 2, 1, 3))
    bench.put(MemType.UOP, [Uop(dst=0, src=0), Uop(dst=0, src=0, wgt=0), Uop(dst=1, src=0, wgt=2)])
    rows = dict(uop_bgn=0, uop_end=1, iter_in=2, dst_factor_in=1)
    return [
        bench.load(MemType.UOP, 3),                                                 # 0 compute
        bench.load(MemType.INP, 2),                                                 # 1 load
        bench.load(MemType.WGT, 4, push_next=True),                                 # 2 load
        Gemm(reset=True, **rows),                                                   # 3
        Gemm(uop_bgn=1, uop_end=3, iter_out=2, src_factor_out=1, wgt_factor_out=1, pop_prev=True),  # 4
        Alu(alu_op=AluOp.SHR, use_imm=True, imm=shift, **rows),                    # 5
        Alu(alu_op=AluOp.MAX, use_imm=True, imm=-127, **rows),                     # 6
        Alu(alu_op=AluOp.MIN, use_imm=True, imm=127, push_next=True, **rows),      # 7
        Store(mem_type=MemType.OUT, sram_base=0, dram_base=bench.base(MemType.OUT), y_size=1, x_size=2,
              x_stride=2, pop_prev=True, push_prev=True),                          # 8 store
        Finish(pop_next=True),                                                      # 9
    ]


@pytest.fixture
def program(bench) -> list[Insn]:
    rng = np.random.default_rng(5)
    return dense(bench, rng.integers(-128, 128, 32), rng.integers(-128, 128, (32, 32)), 6)


@pytest.mark.parametrize("seed", range(4))
def test_dense_program_is_correct_and_counted(bench, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.integers(-128, 128, 32), rng.integers(-128, 128, (32, 32))
    result = bench.sim.run(dense(bench, x, w, 7))
    assert np.array_equal(bench.out(2).ravel(), np.clip((w @ x) >> 7, -127, 127))
    n = result.counters
    assert n.insns == {"LOAD": 3, "STORE": 1, "GEMM": 2, "ALU": 3, "FINISH": 1}
    assert (n.gemm_uops, n.gemm_macs, n.alu_uops) == (4, 4 * 256, 6)
    assert n.bytes_loaded == {"uop": 12, "inp": 32, "wgt": 1024, "acc": 0} and n.bytes_stored == 32
    assert n.high_water == {"uop": 3, "inp": 2, "wgt": 4, "acc": 2}
    assert result.lints == []


def test_dispatch_follows_vta_md(bench):
    assert [queue_of(bench.load(m, 1)) for m in MemType if m != MemType.OUT] == ["compute", "load", "load", "compute"]
    assert queue_of(Store(mem_type=MemType.OUT, sram_base=0, dram_base=0, y_size=1, x_size=1, x_stride=1)) == "store"
    assert {queue_of(i) for i in (Gemm(uop_bgn=0, uop_end=1), Alu(alu_op=AluOp.ADD, uop_bgn=0, uop_end=1),
                                  Finish())} == {"compute"}


# -- bounds -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("index, change, message", [
    (1, dict(sram_base=2047), r"insn 1 \(LOAD INP\): inp elements \[2047, 2049\) is outside the 2048 inp"),
    (1, dict(y_pad_0=1, x_pad_0=1, sram_base=2044), r"inp elements \[2044, 2050\)"),
    (0, dict(sram_base=8190), r"insn 0 \(LOAD UOP\): uop elements \[8190, 8193\)"),
    (2, dict(dram_base=(1 << 20) // 256 - 3), r"insn 2 \(LOAD WGT\): DRAM bytes \[1047808, 1048832\) is outside"),
    (4, dict(dst_factor_out=2047), r"insn 4 \(GEMM\): acc index 2048 \(micro-op 2, i=1, j=0\)"),
    (4, dict(wgt_factor_out=1023), r"insn 4 \(GEMM\): wgt index 1025 \(micro-op 2, i=1, j=0\)"),
    (4, dict(uop_bgn=8190, uop_end=8193), r"micro-ops \[8190, 8193\) is outside the 8192 uop"),
    (5, dict(iter_in=2049), r"insn 5 \(ALU SHR\): acc index 2048 \(micro-op 0, i=0, j=2048\)"),
    (5, dict(use_imm=False, iter_in=3, src_factor_in=1024),
     r"insn 5 \(ALU SHR\): acc index 2048 \(micro-op 0, i=0, j=2\)"),
    (8, dict(sram_base=2047), r"insn 8 \(STORE OUT\): out elements \[2047, 2049\)"),
    (8, dict(y_size=3, x_stride=1 << 15), r"insn 8 \(STORE OUT\): DRAM bytes"),
])
def test_bounds(bench, program, index, change, message):
    program[index] = replace(program[index], **change)
    with pytest.raises(BoundsError, match=message) as e:
        bench.sim.run(program)
    assert e.value.insn == index


# -- races: the program without a token, then with one --------------------------------------------------------

def test_input_read_before_its_load_is_ordered(bench, program):
    program[2] = replace(program[2], push_next=False)
    program[4] = replace(program[4], pop_prev=False)
    with pytest.raises(RaceError, match=r"race on inp\[0\]: insn 1 \(LOAD INP\) writes it and insn 4 \(GEMM\) "
                                        r"reads it, and no chain of dependency tokens orders the two") as e:
        bench.sim.run(program)
    assert (e.value.pair, e.value.buffer, e.value.element) == ((1, 4), "inp", 0)


def test_input_overwritten_while_compute_may_still_read_it(bench, program):
    reload = bench.load(MemType.INP, 2, element=2)
    with pytest.raises(RaceError) as e:
        bench.sim.run(program[:5] + [reload] + program[5:])
    assert e.value.pair == (4, 5) and e.value.buffer == "inp"

    # Compute hands the inputs back, the reload waits for that and tells compute when it is done.
    program[4] = replace(program[4], push_prev=True)
    program[5] = replace(program[5], pop_prev=True)
    bench.sim.run(program[:5] + [replace(reload, pop_next=True, push_next=True)] + program[5:])


def test_store_of_rows_the_alu_may_still_write(bench, program):
    program[7] = replace(program[7], push_next=False)
    program[8] = replace(program[8], pop_prev=False)
    with pytest.raises(RaceError, match=r"race on acc\[0\]: insn 7 \(ALU MIN\) writes it and insn 8 \(STORE OUT\)") \
            as e:
        bench.sim.run(program)
    assert e.value.pair == (7, 8)


def test_rows_rewritten_while_store_may_still_read_them(bench, program):
    """The next tile's reset waits on the load queue (a token-only LOAD), not on the store: a write-after-read."""
    program[7] = replace(program[7], push_prev=True)
    relay = Load(mem_type=MemType.INP, sram_base=0, dram_base=0, y_size=0, x_size=0, x_stride=0, pop_next=True,
                 push_next=True)
    reset = Gemm(reset=True, uop_bgn=0, uop_end=1, iter_in=2, dst_factor_in=1, pop_prev=True)
    with pytest.raises(RaceError, match=r"race on acc\[0\]: insn 8 \(STORE OUT\) reads it and insn 10 \(GEMM reset\) "
                                        r"writes it") as e:
        bench.sim.run(program[:9] + [relay, reset, program[9]])
    assert e.value.pair == (8, 10)
    # Ordered when the reset also waits for the store's token (which then orders FINISH too).
    bench.sim.run(program[:9] + [relay, replace(reset, pop_next=True), Finish()])


def test_double_buffering_through_tokens_is_accepted(bench, program):
    """Two loads of the same buffer, each read by a GEMM: fine when compute hands the buffer back."""
    again = [bench.load(MemType.INP, 2, element=2, pop_next=True), bench.load(MemType.WGT, 4, push_next=True),
             replace(program[4], pop_prev=True)]
    program[4] = replace(program[4], push_prev=True)
    result = bench.sim.run(program[:5] + again + program[5:])
    assert result.counters.gemm_uops == 8
    # Without the hand-back token the second load races with the first GEMM.
    again[0] = replace(again[0], pop_next=False)
    program[4] = replace(program[4], push_prev=False)
    with pytest.raises(RaceError):
        bench.sim.run(program[:5] + again + program[5:])


# -- tokens and FINISH ---------------------------------------------------------------------------------------------

def test_missing_push_deadlocks_with_a_clear_report(bench, program):
    program[7] = replace(program[7], push_next=False)
    with pytest.raises(DeadlockError) as e:
        bench.sim.run(program)
    assert e.value.blocked == {"compute": (9, "store->compute"), "store": (8, "compute->store")}
    assert "deadlock after 8 of 10 instructions" in str(e.value)


@pytest.mark.parametrize("index, change, message", [
    (1, dict(pop_prev=True), r"insn 1 \(LOAD INP\) sets pop_prev, but the load queue has no prev queue"),
    (2, dict(push_prev=True), r"insn 2 \(LOAD WGT\) sets push_prev"),
    (8, dict(push_next=True), r"insn 8 \(STORE OUT\) sets push_next, but the store queue has no next queue"),
    (5, dict(push_prev=True), r"1 compute->load token\(s\) never popped \(pushed by insn 5\): tokens must balance"),
    (9, dict(pop_next=False), r"FINISH \(insn 9\) can raise done before insn 8 \(STORE OUT\) completes"),
])
def test_token_misuse(bench, program, index, change, message):
    program[index] = replace(program[index], **change)
    if index == 9:
        program[8] = replace(program[8], push_prev=False)
    with pytest.raises(SyncError, match=message):
        bench.sim.run(program)


def test_program_must_end_with_finish(bench, program):
    with pytest.raises(SyncError, match="no FINISH"):
        bench.sim.run(program[:-1])
    with pytest.raises(SyncError, match=r"insn 10 \(FINISH\) comes after FINISH"):
        bench.sim.run(program + [Finish()])


def test_memory_types_each_direction_cannot_use(bench, program):
    with pytest.raises(ProgramError, match=r"insn 0 \(LOAD OUT\): LOAD cannot target the output buffer"):
        bench.sim.run([replace(program[0], mem_type=MemType.OUT)] + program[1:])
    program[8] = replace(program[8], mem_type=MemType.ACC)
    with pytest.raises(ProgramError, match=r"insn 8 \(STORE ACC\): STORE writes only the output buffer"):
        bench.sim.run(program)


# -- portability lints ------------------------------------------------------------------------------------------

def _lint_rules(bench, program) -> list[tuple[str, int]]:
    result = bench.sim.run(program, portable=False)
    with pytest.raises(PortabilityError) as e:
        bench.sim.run(program)
    assert e.value.lints == result.lints
    return [(lint.rule, lint.insn) for lint in result.lints]


def test_mul_is_simulator_only(bench, program):
    program[5] = replace(program[5], alu_op=AluOp.MUL, imm=2)
    assert _lint_rules(bench, program) == [("alu-mul", 5)]


@pytest.mark.parametrize("imm, rules", [(15, []), (-16, []), (16, [("shift-range", 5)]), (-17, [("shift-range", 5)])])
def test_shift_range(bench, program, imm, rules):
    program[5] = replace(program[5], imm=imm)
    if rules:
        assert _lint_rules(bench, program) == rules
    else:
        assert bench.sim.run(program).lints == []


def test_shift_amounts_read_from_the_accumulator_are_checked(bench, program):
    bench.put(MemType.UOP, [Uop(dst=0, src=0), Uop(dst=0, src=0, wgt=0), Uop(dst=1, src=0, wgt=2), Uop(dst=0, src=5)])
    bench.put(MemType.ACC, np.full(16, 20, np.int32))
    shift_by_row_5 = replace(program[5], use_imm=False, uop_bgn=3, uop_end=4)
    rules = _lint_rules(bench, [replace(program[0], x_size=4, x_stride=4)] + program[1:5]
                        + [bench.load(MemType.ACC, 1, sram=5), shift_by_row_5] + program[6:])
    assert rules == [("shift-range", 6)]


def test_reduction_on_the_inner_loop_is_a_pipeline_hazard(bench, program):
    bench.put(MemType.UOP, [Uop(dst=0, src=0), Uop(dst=0, src=0, wgt=0), Uop(dst=0, src=1, wgt=1)])
    assert _lint_rules(bench, program) == [("acc-reuse", 4)]


def test_store_needs_an_alu_touch(bench, program):
    program[4] = replace(program[4], push_next=True)
    assert _lint_rules(bench, program[:5] + program[8:]) == [("store-after-alu", 5)]


def test_uop_loads_are_one_row(bench, program):
    program[0] = replace(program[0], y_size=3, x_size=1, x_stride=1)
    assert _lint_rules(bench, program) == [("uop-load-2d", 0)]


# -- data semantics against VTA.md's loops, written out one micro-op at a time ----------------------------------

def _loop(insn: Gemm | Alu, uops: list[Uop]):
    for i in range(insn.iter_out):
        for j in range(insn.iter_in):
            for u in uops[insn.uop_bgn:insn.uop_end]:
                yield (u.dst + i * insn.dst_factor_out + j * insn.dst_factor_in,
                       u.src + i * insn.src_factor_out + j * insn.src_factor_in,
                       u.wgt + i * getattr(insn, "wgt_factor_out", 0) + j * getattr(insn, "wgt_factor_in", 0))


def _alu_ref(op: AluOp, x: int, y: int) -> int:
    if op == AluOp.SHR:
        return x >> y if y >= 0 else wrap32(x << -y)
    return wrap32({AluOp.MIN: min, AluOp.MAX: max, AluOp.ADD: lambda a, b: a + b,
                   AluOp.MUL: lambda a, b: a * b}[op](x, y))


def test_alu_matches_sequential_semantics(bench):
    """Few rows and random micro-ops: rows are rewritten and re-read within one instruction."""
    rng = np.random.default_rng(2)
    rows = 8  # micro-op indices below 7, plus the factors below
    for _ in range(30):
        uops = [Uop(dst=int(d), src=int(s)) for d, s in rng.integers(0, rows - 1, (8, 2))]
        acc = rng.integers(INT32.min, INT32.max, (rows, 16), endpoint=True).astype(np.int32)
        bench.put(MemType.UOP, uops)
        bench.put(MemType.ACC, acc)
        alus = []
        for _ in range(3):
            op = AluOp(int(rng.integers(0, 5)))
            imm = int(rng.integers(-16, 16)) if op == AluOp.SHR or rng.random() < 0.5 else None
            alus.append(Alu(alu_op=op, use_imm=imm is not None, imm=imm or 0, uop_bgn=int(rng.integers(0, 4)),
                            uop_end=int(rng.integers(4, 9)), iter_out=2, iter_in=2, dst_factor_out=1,
                            src_factor_in=int(rng.integers(0, 2))))
        bench.sim.run([bench.load(MemType.UOP, 8), bench.load(MemType.ACC, rows)] + alus + [Finish()],
                      portable=False)
        ref = acc.astype(object)
        for a in alus:
            for d, s, _ in _loop(a, uops):
                ref[d] = [_alu_ref(a.alu_op, int(v), a.imm if a.use_imm else int(ref[s][k]))
                          for k, v in enumerate(ref[d])]
        assert np.array_equal(bench.sim.acc[:rows, 0].astype(np.int64), ref.astype(np.int64))


def test_gemm_matches_sequential_semantics(bench):
    """Random micro-ops with repeated destinations, accumulating onto loaded values that overflow int32."""
    rng = np.random.default_rng(4)
    uops = [Uop(dst=int(d), src=int(s), wgt=int(w)) for d, s, w in rng.integers(0, 4, (10, 3))]
    inp = rng.integers(-128, 128, (8, 16)).astype(np.int8)
    wgt = rng.integers(-128, 128, (8, 16, 16)).astype(np.int8)
    acc = rng.integers(INT32.max - 1000, INT32.max, (8, 16), endpoint=True).astype(np.int32)
    for mem, data in ((MemType.UOP, uops), (MemType.INP, inp), (MemType.WGT, wgt), (MemType.ACC, acc)):
        bench.put(mem, data)
    gemm = Gemm(uop_bgn=0, uop_end=10, iter_out=2, iter_in=3, dst_factor_out=1, src_factor_in=1,
                wgt_factor_out=2, wgt_factor_in=1, pop_prev=True)
    result = bench.sim.run([bench.load(MemType.UOP, 10), bench.load(MemType.ACC, 8), bench.load(MemType.INP, 8),
                            bench.load(MemType.WGT, 8, push_next=True), gemm, Finish()], portable=False)
    ref = acc.astype(np.int64)
    for d, s, w in _loop(gemm, uops):
        ref[d] = [wrap32(int(v)) for v in ref[d] + wgt[w].astype(np.int64) @ inp[s].astype(np.int64)]
    assert np.array_equal(bench.sim.acc[:8, 0], ref.astype(np.int32))
    assert result.counters.gemm_macs == 60 * 256


def test_load_pads_with_zeros_and_strides(bench):
    image = np.arange(1, 1 + 5 * 7 * 16).astype(np.int8).reshape(5, 7, 16)
    bench.put(MemType.INP, image)
    bench.sim.inp[:] = 99  # stale data the padding must overwrite
    load = Load(mem_type=MemType.INP, sram_base=3, dram_base=bench.base(MemType.INP, 7 + 1), y_size=3, x_size=4,
                x_stride=7, y_pad_0=1, y_pad_1=2, x_pad_0=2, x_pad_1=1, push_next=True)
    bench.sim.run([load, Finish(pop_prev=True)])
    got = bench.sim.inp[3:3 + 6 * 7, 0].reshape(6, 7, 16)
    assert np.array_equal(got, np.pad(image[1:4, 1:5], ((1, 2), (2, 1), (0, 0))))
    assert (bench.sim.inp[:3] == 99).all() and (bench.sim.inp[45:] == 99).all()


def test_store_truncates_to_the_low_byte(bench, program):
    """Without the clip, STORE keeps the low 8 bits of each lane: 300 becomes 44, -129 becomes 127."""
    bench.put(MemType.ACC, np.array([300, -129, 255, -1] * 8, np.int32))
    result = bench.sim.run([bench.load(MemType.UOP, 3), bench.load(MemType.ACC, 2),
                            Alu(alu_op=AluOp.ADD, use_imm=True, imm=0, uop_bgn=0, uop_end=1, iter_in=2,
                                dst_factor_in=1, push_next=True)] + program[8:])
    assert bench.out(2).ravel().tolist() == [44, 127, -1, -1] * 8
    assert result.lints == []


def test_a_layer_with_thousands_of_micro_ops_is_fast(bench):
    rng = np.random.default_rng(0)
    uops = [Uop(dst=int(d), src=int(d), wgt=int(w)) for d, w in zip(range(1024), rng.integers(0, 64, 1024))]
    bench.put(MemType.UOP, uops + [Uop(dst=0, src=0)])
    bench.put(MemType.INP, rng.integers(-128, 128, (2048, 16)).astype(np.int8))
    bench.put(MemType.WGT, rng.integers(-128, 128, (1024, 16, 16)).astype(np.int8))
    rows = dict(uop_bgn=1024, uop_end=1025, iter_in=2048, dst_factor_in=1)
    # 1024 micro-ops x 8 (reduction, outer) x 2 (halves of the accumulator): 16384 GEMM steps, then requantize.
    program = [
        bench.load(MemType.UOP, 1025), bench.load(MemType.INP, 2048), bench.load(MemType.WGT, 1024, push_next=True),
        Gemm(reset=True, **rows),
        Gemm(uop_bgn=0, uop_end=1024, iter_out=8, iter_in=2, dst_factor_in=1024, src_factor_in=1024,
             wgt_factor_out=64, wgt_factor_in=512, pop_prev=True),
        Alu(alu_op=AluOp.SHR, use_imm=True, imm=9, **rows), Alu(alu_op=AluOp.MAX, use_imm=True, imm=-127, **rows),
        Alu(alu_op=AluOp.MIN, use_imm=True, imm=127, push_next=True, **rows),
        Store(mem_type=MemType.OUT, sram_base=0, dram_base=bench.base(MemType.OUT), y_size=1, x_size=2048,
              x_stride=2048, pop_prev=True, push_prev=True),
        Finish(pop_next=True)]
    start = time.perf_counter()
    result = bench.sim.run(program)
    elapsed = time.perf_counter() - start
    assert result.counters.gemm_uops == 16384 and result.counters.alu_uops == 3 * 2048
    assert elapsed < 1.0, f"{elapsed:.2f} s"
