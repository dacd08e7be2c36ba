"""One static arena for every intermediate tensor and kernel workspace, placed by liveness.

A buffer lives from the call that writes it to the last call that reads it; a kernel's workspace
lives during its own call only. Buffers are placed greedily, largest first, at the lowest offset
that overlaps no buffer alive at the same time (TFLite Micro's greedy planner does the same), so
the arena ends close to the largest set of simultaneously live activations.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgeprune.backends.micro.plan import Program

ALIGN = 16  # bytes: enough for any scalar type and for 128-bit loads


def align(n: int, to: int = ALIGN) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True)
class Block:
    key: tuple  # ("tensor", index) or ("workspace", call, k)
    size: int
    first: int  # call index
    last: int


@dataclass
class Arena:
    size: int
    offsets: dict[tuple, int]
    peak_live: int  # the most bytes alive at one call: a lower bound for `size`
    workspace_peak: int  # the most workspace bytes one call asks for


def lifetimes(program: Program, workspace: dict[str, list[int]]) -> list[Block]:
    """Live ranges, in call indices, of arena tensors and of every workspace request."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for step, call in enumerate(program.calls):
        for index in call.args:
            first.setdefault(index, step)
            last[index] = step
    blocks = [Block(("tensor", i), align(t.nbytes), first[i], last[i])
              for i, t in enumerate(program.tensors) if t.role == "arena" and i in first]
    for step, call in enumerate(program.calls):
        # a Huffman-coded weight is decoded into the arena just before the call that reads it
        blocks += [Block(("decoded", step, i), align(program.tensors[i].nbytes), step, step)
                   for i in dict.fromkeys(call.args) if program.tensors[i].coded is not None]
        # LIFO requests inside one call are all alive together: one block each, at the same step
        blocks += [Block(("workspace", step, k), align(n), step, step) for k, n in enumerate(workspace.get(call.kernel, []))]
    return blocks


def plan_arena(program: Program, workspace: dict[str, list[int]]) -> Arena:
    blocks = sorted(lifetimes(program, workspace), key=lambda b: (-b.size, b.first, b.key))
    placed: list[tuple[Block, int]] = []
    for block in blocks:
        busy = sorted((off, off + b.size) for b, off in placed if b.first <= block.last and block.first <= b.last)
        offset = 0
        for start, end in busy:
            if offset + block.size <= start:
                break
            offset = max(offset, end)
        placed.append((block, offset))
    size = max((off + b.size for b, off in placed), default=0)
    steps = range(len(program.calls))
    peak = max((sum(b.size for b, _ in placed if b.first <= s <= b.last) for s in steps), default=0)
    workspace = max((sum(b.size for b, _ in placed if b.key[0] == "workspace" and b.first == s) for s in steps), default=0)
    return Arena(size, {b.key: off for b, off in placed}, peak, workspace)
