"""How every benchmark script prints its table: aligned text for people, or Markdown for BENCHMARKS.md."""
from __future__ import annotations

from typing import Any, Sequence


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool, caption: str = "",
                align: str = "left") -> None:
    """`caption` (date, machine, command) heads the Markdown form; plain text gets it as a title line."""
    if markdown:
        if caption:
            print(caption + "\n")
        print("| " + " | ".join(map(str, header)) + " |\n|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(map(str, r)) + " |")
        return
    if caption:
        print(caption)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    pad = str.ljust if align == "left" else str.rjust
    for r in [header, *rows]:
        print("  ".join(pad(str(c), w) for c, w in zip(r, widths)))
