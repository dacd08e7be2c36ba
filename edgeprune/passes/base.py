"""The pass interface: a name, its options (dataclass fields) and `run(graph, ctx) -> graph`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import onnx_graphsurgeon as gs

from edgeprune.context import Context
from edgeprune.errors import UserError


@dataclass
class Pass:
    """Subclasses are dataclasses: their fields are the pass's options, checked by `from_options`."""

    name: ClassVar[str] = ""
    # A structural pass edits the graph; the pipeline then re-infers shapes, checks and measures it.
    structural: ClassVar[bool] = True

    def run(self, graph: gs.Graph, ctx: Context) -> gs.Graph:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_options(cls, options: dict[str, Any], where: str) -> "Pass":
        known = {f.name: f for f in fields(cls)}
        for key, value in options.items():
            if key not in known:
                raise UserError(f"{where}: pass '{cls.name}' has no option '{key}' "
                                f"(options: {', '.join(known) or 'none'})")
            expected = type(getattr(cls(), key)) if known[key].default is not None else None
            if expected is not None and not isinstance(value, expected) and not (expected is float and isinstance(value, int)):
                raise UserError(f"{where}: option '{key}' of pass '{cls.name}' must be {expected.__name__}, got {value!r}")
        return cls(**options)
