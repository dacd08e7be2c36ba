"""The first pass of every pipeline: see edgeprune.graph.canonicalize for what it does and why."""
from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from edgeprune.context import Context
from edgeprune.graph.canonicalize import canonicalize
from edgeprune.passes.base import Pass


@dataclass
class Canonicalize(Pass):
    name = "canonicalize"

    def run(self, graph: gs.Graph, ctx: Context) -> gs.Graph:
        return gs.import_onnx(canonicalize(gs.export_onnx(graph), ctx.input_shapes))
