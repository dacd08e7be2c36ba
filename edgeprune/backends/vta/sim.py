"""A functional, bit-exact VTA simulator that also rejects what only the hardware would punish.

Data semantics follow the upstream C++ functional simulator (tvm-vta `src/sim/sim_driver.cc`), which the
conformance vectors were produced with. On top of it, every run checks what that simulator does not:
a deadlock is reported instead of hanging, every SRAM and DRAM index is bounds-checked, and every pair of
cross-queue accesses to the same buffer element is checked to be ordered by a chain of dependency tokens
(a data race otherwise: the three modules run concurrently on the board). Portability lints (VTA.md)
flag programs that pass here but would go wrong on the HLS design.

Races are found with vector clocks: an instruction's clock counts, per queue, the instructions that must
have completed before it starts (program order within its queue, plus the pusher of every token it
pops). Since each token FIFO has one producer and one consumer, the queues form a Kahn network: the
result, a deadlock, and the happens-before order do not depend on the order we pick to run them in.

The same walk gives a timing estimate (`Counters.cycles`): each instruction starts when its queue is free and
every token it pops has been pushed, and lasts as `_CYCLES` says; the finish time of the last one is the
critical path through the three queues, so double buffering that overlaps shows as overlap, a stall as a stall.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgeprune.backends.vta.config import VTAConfig
from edgeprune.backends.vta.isa import (Alu, AluOp, Finish, Gemm, Insn, Load, MemType, ProgramError, Store,
                                        decode_program, uop_fields)

QUEUES = ("load", "compute", "store")
# Each queue's neighbours in the load -> compute -> store order: what "prev" and "next" name.
_NEIGHBOURS = {"load": (None, "compute"), "compute": ("load", "store"), "store": ("compute", None)}
_BUFFER = {MemType.UOP: "uop", MemType.WGT: "wgt", MemType.INP: "inp", MemType.ACC: "acc", MemType.OUT: "out"}
_TRACKED = ("uop", "inp", "wgt", "acc")  # SRAM buffers; "out" is the accumulator rows a STORE reads
_SHIFT_RANGE = range(-16, 16)  # the hardware reads 5 bits of a shift amount
# Who last wrote each accumulator row, for the rule that STORE reads rows an ALU op wrote last.
_NONE, _LOADED, _GEMM, _ALU = range(4)
_WRITER = {_NONE: "nothing", _LOADED: "LOAD ACC", _GEMM: "GEMM"}
AXI_BYTES_PER_CYCLE = 8  # one 64-bit AXI beat per cycle on every memory port of the Pynq/Ultra96 designs
ISSUE_CYCLES = 4  # to fetch (16 B at 8 B per cycle), decode and dispatch one instruction


def _shr(x: np.ndarray, y: np.ndarray | int) -> np.ndarray:
    """Upstream's SHR: right for y >= 0, left for y < 0 (shifts past 31 are linted, here they saturate)."""
    y = np.asarray(y)
    return np.where(y >= 0, x >> np.clip(y, 0, 63), x << np.clip(-y, 0, 63))


# int64 in, wrapped to int32 by the caller, as int32 C arithmetic wraps on the board and upstream.
_ALU_OPS: dict[AluOp, Callable[[np.ndarray, np.ndarray | int], np.ndarray]] = {
    AluOp.MIN: np.minimum, AluOp.MAX: np.maximum, AluOp.ADD: np.add, AluOp.SHR: _shr, AluOp.MUL: np.multiply}


def _transfer_cycles(insn: Load | Store, config: VTAConfig) -> int:
    """A LOAD writes its whole padded image into SRAM; a STORE moves its rows; both at one AXI beat per cycle."""
    elements = (insn.y_pad_0 + insn.y_size + insn.y_pad_1) * (insn.x_pad_0 + insn.x_size + insn.x_pad_1) \
        if insn.x_size else 0
    return -(-elements * config.elem_bytes[_BUFFER[insn.mem_type]] // AXI_BYTES_PER_CYCLE)


# Cycles each instruction takes once it starts: transfers by the bytes they move, GEMM and ALU one cycle per
# micro-op iteration (the HLS pipelines' initiation interval of 1).
_CYCLES: dict[type, Callable[..., int]] = {
    Load: _transfer_cycles, Store: _transfer_cycles, Finish: lambda insn, config: 0,
    Gemm: lambda insn, config: insn.iter_out * insn.iter_in * max(insn.uop_end - insn.uop_bgn, 0),
    Alu: lambda insn, config: insn.iter_out * insn.iter_in * max(insn.uop_end - insn.uop_bgn, 0)}


class DeadlockError(ProgramError):
    """No queue can proceed: `blocked` maps each stuck queue to (insn index, token FIFO it waits on)."""

    def __init__(self, message: str, blocked: dict[str, tuple[int, str]]) -> None:
        super().__init__(message, min(i for i, _ in blocked.values()))
        self.blocked = blocked


class SyncError(ProgramError):
    """Dependency tokens used where a queue has no such neighbour, left unbalanced, or FINISH too early."""


class BoundsError(ProgramError):
    """An SRAM or DRAM index outside its memory."""


class RaceError(ProgramError):
    """Two instructions in different queues touch the same element, one writes, and no token path orders them."""

    def __init__(self, message: str, pair: tuple[int, int], buffer: str, element: int) -> None:
        super().__init__(message, pair[1])
        self.pair, self.buffer, self.element = pair, buffer, element


@dataclass(frozen=True)
class Lint:
    """A portability finding: runs here, would misbehave on the HLS design."""

    rule: str
    insn: int
    message: str


class PortabilityError(ProgramError):
    """Raised after a run in portable mode; `lints` holds every finding."""

    def __init__(self, lints: list[Lint]) -> None:
        super().__init__("not portable to the VTA hardware:\n  " + "\n  ".join(l.message for l in lints),
                         lints[0].insn)
        self.lints = lints


@dataclass
class Counters:
    """What a run cost: for tiling decisions and for checking a schedule's arithmetic."""

    insns: dict[str, int] = field(default_factory=lambda: {op: 0 for op in ("LOAD", "STORE", "GEMM", "ALU", "FINISH")})
    gemm_uops: int = 0  # micro-op executions of accumulating GEMMs (upstream's gemm_counter)
    gemm_macs: int = 0
    alu_uops: int = 0
    bytes_loaded: dict[str, int] = field(default_factory=lambda: {b: 0 for b in _TRACKED})
    bytes_stored: int = 0
    high_water: dict[str, int] = field(default_factory=lambda: {b: 0 for b in _TRACKED})  # elements used
    cycles: int = 0  # estimated: the critical path through the queues and their tokens (module docstring)


@dataclass
class SimResult:
    counters: Counters
    lints: list[Lint]


def queue_of(insn: Insn) -> str:
    """The module fetch dispatches an instruction to."""
    if isinstance(insn, Store):
        return "store"
    if isinstance(insn, Load) and insn.mem_type in (MemType.INP, MemType.WGT):
        return "load"
    return "compute"


def kind(insn: Insn) -> str:
    """A short label for messages: LOAD INP, GEMM reset, ALU SHR..."""
    if isinstance(insn, (Load, Store)):
        return f"{insn.OPCODE.name} {insn.mem_type.name}"
    if isinstance(insn, Alu):
        return f"ALU {insn.alu_op.name}"
    return "GEMM reset" if isinstance(insn, Gemm) and insn.reset else insn.OPCODE.name


def _spans(dst: np.ndarray, src: np.ndarray | None) -> list[tuple[int, int]]:
    """Cut a micro-op sequence where one vector step would differ from sequential order: a row written
    twice, or read after it was written."""
    spans, start, written = [], 0, set()
    reads = src.tolist() if src is not None else None
    for t, d in enumerate(dst.tolist()):
        if d in written or (reads is not None and reads[t] in written):
            spans.append((start, t))
            start, written = t, set()
        written.add(d)
    spans.append((start, len(dst)))
    return spans


@dataclass
class _Access:
    """Per-element history of one buffer for the race check: the last writer and, per queue, the last reader."""

    w_queue: np.ndarray
    w_pos: np.ndarray
    w_insn: np.ndarray
    r_pos: np.ndarray
    r_insn: np.ndarray

    @classmethod
    def empty(cls, depth: int) -> _Access:
        return cls(np.full(depth, -1, np.int64), np.zeros(depth, np.int64), np.zeros(depth, np.int64),
                   np.full((len(QUEUES), depth), -1, np.int64), np.zeros((len(QUEUES), depth), np.int64))


@dataclass(frozen=True)
class _Ctx:
    """The running instruction: program index, queue number, position in its queue, vector clock."""

    insn: int
    queue: int
    pos: int
    clock: tuple[int, ...]


class Simulator:
    """One VTA device on a DRAM image. SRAM persists across runs as on the board (micro-ops loaded by one
    run can be used by the next); each run starts with all earlier work complete."""

    def __init__(self, dram: np.ndarray, config: VTAConfig = VTAConfig()) -> None:
        if dram.dtype != np.uint8 or dram.ndim != 1:
            raise ValueError("dram must be a 1-D uint8 array (byte addresses)")
        self.dram, self.config = dram, config
        c, depth = config, config.depth
        self.sram = {b: np.zeros((depth[b], c.elem_bytes[b]), np.uint8) for b in _TRACKED}  # one row per element
        self.uop = self.sram["uop"].view("<u4")[:, 0]
        self.inp = self.sram["inp"].view(np.int8).reshape(-1, c.batch, c.block_in)
        self.wgt = self.sram["wgt"].view(np.int8).reshape(-1, c.block_out, c.block_in)
        self.acc = self.sram["acc"].view("<i4").reshape(-1, c.batch, c.block_out)
        self._acc_writer = np.full(depth["acc"], _NONE, np.int8)
        self._exec = {Load: self._load, Store: self._store, Gemm: self._gemm, Alu: self._alu, Finish: self._finish}

    def run(self, program: bytes | Sequence[Insn], portable: bool = True) -> SimResult:
        """Run a whole program to FINISH. Raises on any hazard; with `portable`, also on any lint."""
        insns = decode_program(bytes(program)) if isinstance(program, (bytes, bytearray, memoryview)) else list(program)
        self._insns, self._lints, self._counters = insns, [], Counters()
        self._access = {b: _Access.empty(self.config.depth[b]) for b in _TRACKED}
        self._queues = self._dispatch(insns)
        fifos: dict[tuple[str, str], deque[tuple[int, tuple[int, ...], int]]] = {
            (a, b): deque() for a, (p, n) in _NEIGHBOURS.items() for b in (p, n) if b}
        heads = dict.fromkeys(QUEUES, 0)
        clocks = dict.fromkeys(QUEUES, (0,) * len(QUEUES))
        free = dict.fromkeys(QUEUES, 0)  # cycle at which each queue's last instruction ends
        progress = True
        while progress:
            progress = False
            for qi, q in enumerate(QUEUES):
                while heads[q] < len(self._queues[q]):
                    i = self._queues[q][heads[q]]
                    insn = insns[i]
                    pops, pushes = self._tokens(q, insn)
                    if any(not fifos[f] for f in pops):
                        break
                    clock = tuple(heads[q] + 1 if k == qi else c for k, c in enumerate(clocks[q]))
                    start = free[q]
                    for f in pops:
                        _, pushed_clock, pushed_at = fifos[f].popleft()
                        clock, start = tuple(map(max, clock, pushed_clock)), max(start, pushed_at)
                    self._counters.insns[insn.OPCODE.name] += 1
                    self._exec[type(insn)](insn, _Ctx(i, qi, heads[q], clock))
                    free[q] = start + ISSUE_CYCLES + _CYCLES[type(insn)](insn, self.config)
                    for f in pushes:
                        fifos[f].append((i, clock, free[q]))
                    clocks[q], heads[q], progress = clock, heads[q] + 1, True
        self._check_end(heads, fifos)
        self._counters.cycles = max(free.values())
        if portable and self._lints:
            raise PortabilityError(self._lints)
        return SimResult(self._counters, self._lints)

    # -- queues and tokens ---------------------------------------------------------------------------

    def _dispatch(self, insns: list[Insn]) -> dict[str, list[int]]:
        queues: dict[str, list[int]] = {q: [] for q in QUEUES}
        for i, insn in enumerate(insns):
            q = queue_of(insn)
            for flag in ("pop_prev", "push_prev", "pop_next", "push_next"):
                if getattr(insn, flag) and _NEIGHBOURS[q][flag.endswith("next")] is None:
                    raise SyncError(f"insn {i} ({kind(insn)}) sets {flag}, but the {q} queue has no "
                                    f"{flag.split('_')[1]} queue", i)
            if queues["compute"] and isinstance(insns[queues["compute"][-1]], Finish):
                raise SyncError(f"insn {i} ({kind(insn)}) comes after FINISH", i)
            queues[q].append(i)
        if not queues["compute"] or not isinstance(insns[queues["compute"][-1]], Finish):
            raise SyncError("the program has no FINISH: the host would wait for done until it times out")
        return queues

    @staticmethod
    def _tokens(q: str, insn: Insn) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        prev, nxt = _NEIGHBOURS[q]
        pops = [(other, q) for flag, other in ((insn.pop_prev, prev), (insn.pop_next, nxt)) if flag]
        pushes = [(q, other) for flag, other in ((insn.push_prev, prev), (insn.push_next, nxt)) if flag]
        return pops, pushes  # type: ignore[return-value]

    def _check_end(self, heads: dict[str, int], fifos: dict[tuple[str, str], deque]) -> None:
        blocked = {}
        for q in QUEUES:
            if heads[q] < len(self._queues[q]):
                i = self._queues[q][heads[q]]
                pops, _ = self._tokens(q, self._insns[i])
                blocked[q] = (i, next("->".join(f) for f in pops if not fifos[f]))
        if blocked:
            ran = sum(heads.values())
            waits = "; ".join(f"the {q} queue waits at insn {i} ({kind(self._insns[i])}) for a {f} token"
                              for q, (i, f) in blocked.items())
            raise DeadlockError(f"deadlock after {ran} of {len(self._insns)} instructions: {waits}, and nothing "
                                f"left to run will push one", blocked)
        for f, tokens in fifos.items():
            if tokens:
                pushers = ", ".join(str(t[0]) for t in tokens)
                raise SyncError(f"{len(tokens)} {'->'.join(f)} token(s) never popped (pushed by insn {pushers}): "
                                f"tokens must balance at the end", tokens[0][0])

    # -- checks shared by all instructions -----------------------------------------------------------

    def _touch(self, buf: str, idx: np.ndarray, write: bool, ctx: _Ctx) -> None:
        """Record an access, raising if it races with an earlier one from another queue."""
        if not idx.size:
            return
        hist = self._access[buf]
        clock = np.array(ctx.clock)
        wq = hist.w_queue[idx]
        bad = (wq >= 0) & (wq != ctx.queue) & (hist.w_pos[idx] >= clock[wq])
        if bad.any():
            k = idx[np.argmax(bad)]
            self._race(buf, int(k), int(hist.w_insn[k]), "writes", ctx.insn, "writes" if write else "reads")
        self._counters.high_water[buf] = max(self._counters.high_water[buf], int(idx.max()) + 1)
        if not write:
            hist.r_pos[ctx.queue, idx], hist.r_insn[ctx.queue, idx] = ctx.pos, ctx.insn
            return
        for r in range(len(QUEUES)):
            rp = hist.r_pos[r, idx]
            bad = (r != ctx.queue) & (rp >= 0) & (rp >= clock[r])
            if bad.any():
                k = idx[np.argmax(bad)]
                self._race(buf, int(k), int(hist.r_insn[r, k]), "reads", ctx.insn, "writes")
        hist.w_queue[idx], hist.w_pos[idx], hist.w_insn[idx] = ctx.queue, ctx.pos, ctx.insn
        hist.r_pos[:, idx] = -1

    def _race(self, buf: str, element: int, first: int, first_verb: str, second: int, second_verb: str) -> None:
        """`first` ran first here; on the board either may run first, hence the error."""
        raise RaceError(f"race on {buf}[{element}]: insn {first} ({kind(self._insns[first])}) {first_verb} it and "
                        f"insn {second} ({kind(self._insns[second])}) {second_verb} it, and no chain of dependency "
                        f"tokens orders the two", (min(first, second), max(first, second)), buf, element)

    def _bounds(self, ctx: _Ctx, what: str, lo: int, hi: int, limit: int, unit: str) -> None:
        if lo < 0 or hi > limit:
            raise BoundsError(f"insn {ctx.insn} ({kind(self._insns[ctx.insn])}): {what} [{lo}, {hi}) is outside "
                              f"the {limit} {unit}", ctx.insn)

    def _lint(self, rule: str, ctx: _Ctx, message: str) -> None:
        self._lints.append(Lint(rule, ctx.insn, f"insn {ctx.insn} ({kind(self._insns[ctx.insn])}): {message} [{rule}]"))

    def _dram_index(self, insn: Load | Store, eb: int, ctx: _Ctx) -> np.ndarray:
        """Byte addresses of a 2-D strided transfer, one row per y."""
        start = insn.dram_base * eb
        idx = (start + (np.arange(insn.y_size, dtype=np.int64) * insn.x_stride * eb)[:, None]
               + np.arange(insn.x_size * eb, dtype=np.int64)[None, :])
        self._bounds(ctx, "DRAM bytes", start, int(idx.max()) + 1 if idx.size else start, self.dram.size,
                     "bytes of DRAM")
        return idx

    # -- instructions --------------------------------------------------------------------------------

    def _load(self, insn: Load, ctx: _Ctx) -> None:
        if insn.x_size == 0:
            return  # a token-only instruction
        buf = _BUFFER[insn.mem_type]
        if buf == "out":
            raise ProgramError(f"insn {ctx.insn} (LOAD OUT): LOAD cannot target the output buffer", ctx.insn)
        eb = self.config.elem_bytes[buf]
        rows, cols = insn.y_pad_0 + insn.y_size + insn.y_pad_1, insn.x_pad_0 + insn.x_size + insn.x_pad_1
        end = insn.sram_base + rows * cols
        self._bounds(ctx, f"{buf} elements", insn.sram_base, end, self.config.depth[buf], f"{buf} elements")
        src = self.dram[self._dram_index(insn, eb, ctx)]
        image = np.zeros((rows, cols, eb), np.uint8)
        image[insn.y_pad_0:insn.y_pad_0 + insn.y_size, insn.x_pad_0:insn.x_pad_0 + insn.x_size] = \
            src.reshape(insn.y_size, insn.x_size, eb)
        self._touch(buf, np.arange(insn.sram_base, end), True, ctx)
        self.sram[buf][insn.sram_base:end] = image.reshape(-1, eb)
        self._counters.bytes_loaded[buf] += insn.y_size * insn.x_size * eb
        if buf == "acc":
            self._acc_writer[insn.sram_base:end] = _LOADED
        if buf == "uop" and rows * cols != insn.x_size:
            self._lint("uop-load-2d", ctx, "the HLS design copies x_size micro-ops and ignores y_size and padding")

    def _store(self, insn: Store, ctx: _Ctx) -> None:
        if insn.x_size == 0:
            return
        if insn.mem_type != MemType.OUT or insn.y_pad_0 or insn.y_pad_1 or insn.x_pad_0 or insn.x_pad_1:
            raise ProgramError(f"insn {ctx.insn} ({kind(insn)}): STORE writes only the output buffer, without "
                               f"padding", ctx.insn)
        end = insn.sram_base + insn.y_size * insn.x_size
        self._bounds(ctx, "out elements", insn.sram_base, end, self.config.depth["out"], "out elements")
        dram_idx = self._dram_index(insn, self.config.elem_bytes["out"], ctx)
        self._touch("acc", np.arange(insn.sram_base, end), False, ctx)
        # STORE keeps the low 8 bits of each int32 lane: the clip before it is the program's job.
        self.dram[dram_idx] = self.acc[insn.sram_base:end].astype(np.int8).view(np.uint8).reshape(dram_idx.shape)
        self._counters.bytes_stored += dram_idx.size
        writer = self._acc_writer[insn.sram_base:end]
        if (writer != _ALU).any():
            k = int(np.argmax(writer != _ALU))
            self._lint("store-after-alu", ctx, f"accumulator row {insn.sram_base + k} was last written by "
                       f"{_WRITER[int(writer[k])]}, not an ALU op: the HLS design stores what the ALU wrote")

    def _indices(self, insn: Gemm | Alu, ctx: _Ctx, base: np.ndarray, f_out: int, f_in: int, buf: str) -> np.ndarray:
        """Flattened (iter_out, iter_in, uop) index sequence in execution order, bounds-checked."""
        idx = (base[None, None, :] + np.arange(insn.iter_out)[:, None, None] * f_out
               + np.arange(insn.iter_in)[None, :, None] * f_in).ravel()
        if idx.size and idx.max() >= self.config.depth[buf]:
            k = int(np.argmax(idx >= self.config.depth[buf]))
            i, j, u = np.unravel_index(k, (insn.iter_out, insn.iter_in, base.size))
            raise BoundsError(f"insn {ctx.insn} ({kind(insn)}): {buf} index {idx[k]} (micro-op {insn.uop_bgn + u}, "
                              f"i={i}, j={j}) is outside the {self.config.depth[buf]} {buf} elements", ctx.insn)
        return idx

    def _uops(self, insn: Gemm | Alu, ctx: _Ctx) -> tuple[np.ndarray, ...]:
        end = max(insn.uop_bgn, insn.uop_end)
        self._bounds(ctx, "micro-ops", insn.uop_bgn, end, self.config.depth["uop"], "uop elements")
        self._touch("uop", np.arange(insn.uop_bgn, end), False, ctx)
        return uop_fields(self.uop[insn.uop_bgn:end])

    def _reuse_lint(self, dst: np.ndarray, ctx: _Ctx) -> None:
        twice = np.flatnonzero(dst[1:] == dst[:-1])
        if twice.size:
            self._lint("acc-reuse", ctx, f"accumulator row {dst[twice[0]]} is written by consecutive micro-ops "
                       f"({twice.size} times): a pipeline hazard, put the reduction on the outer loop")

    def _gemm(self, insn: Gemm, ctx: _Ctx) -> None:
        u_dst, u_src, u_wgt = self._uops(insn, ctx)
        dst = self._indices(insn, ctx, u_dst, insn.dst_factor_out, insn.dst_factor_in, "acc")
        if insn.reset:
            self._touch("acc", dst, True, ctx)
            self.acc[dst] = 0
            self._acc_writer[dst] = _GEMM
            return
        src = self._indices(insn, ctx, u_src, insn.src_factor_out, insn.src_factor_in, "inp")
        wgt = self._indices(insn, ctx, u_wgt, insn.wgt_factor_out, insn.wgt_factor_in, "wgt")
        self._touch("inp", src, False, ctx)
        self._touch("wgt", wgt, False, ctx)
        self._touch("acc", dst, True, ctx)
        # Products are summed in int32 with wrap-around; addition commutes, so one scatter-add is exact.
        prod = np.matmul(self.inp[src].astype(np.int32), self.wgt[wgt].astype(np.int32).transpose(0, 2, 1))
        np.add.at(self.acc, dst, prod)
        self._acc_writer[dst] = _GEMM
        self._counters.gemm_uops += dst.size
        self._counters.gemm_macs += dst.size * self.config.batch * self.config.block_in * self.config.block_out
        self._reuse_lint(dst, ctx)

    def _alu(self, insn: Alu, ctx: _Ctx) -> None:
        u_dst, u_src, _ = self._uops(insn, ctx)
        dst = self._indices(insn, ctx, u_dst, insn.dst_factor_out, insn.dst_factor_in, "acc")
        src = None if insn.use_imm else self._indices(insn, ctx, u_src, insn.src_factor_out, insn.src_factor_in, "acc")
        if src is not None:
            self._touch("acc", src, False, ctx)
        self._touch("acc", dst, True, ctx)
        op, shifts = _ALU_OPS[insn.alu_op], set()
        for a, b in _spans(dst, src):
            operand = insn.imm if src is None else self.acc[src[a:b]].astype(np.int64)
            if insn.alu_op == AluOp.SHR:
                shifts.update(np.unique(operand).tolist())
            self.acc[dst[a:b]] = op(self.acc[dst[a:b]].astype(np.int64), operand).astype(np.int32)
        self._acc_writer[dst] = _ALU
        self._counters.alu_uops += dst.size
        if insn.alu_op == AluOp.MUL:
            self._lint("alu-mul", ctx, "ALU MUL exists only in the simulator")
        if not shifts <= set(_SHIFT_RANGE):
            self._lint("shift-range", ctx, f"shift amount {min(shifts - set(_SHIFT_RANGE))} outside -16..15 "
                       f"(the hardware reads 5 bits)")
        self._reuse_lint(dst, ctx)

    def _finish(self, insn: Finish, ctx: _Ctx) -> None:
        """Done must not rise while a load or store can still run: the host reads DRAM as soon as it does."""
        for qi, q in enumerate(QUEUES):
            if ctx.clock[qi] < len(self._queues[q]):
                i = self._queues[q][ctx.clock[qi]]
                raise SyncError(f"FINISH (insn {ctx.insn}) can raise done before insn {i} ({kind(self._insns[i])}) "
                                f"completes: no chain of dependency tokens orders it first", ctx.insn)
