"""Int8 QDQ quantization as a pipeline pass; see edgeprune.quant.quantize."""
from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from edgeprune.context import Context
from edgeprune.errors import UserError
from edgeprune.passes.base import Pass

METHODS = ("minmax", "percentile", "entropy")


@dataclass
class Quantize(Pass):
    name = "quantize"
    method: str = "minmax"
    per_channel: bool = True
    pow2: bool = False
    max_samples: int = 256  # calibration cost grows with samples; a few hundred settle the ranges

    def run(self, graph: gs.Graph, ctx: Context) -> gs.Graph:
        from edgeprune.quant.quantize import quantize  # onnxruntime.quantization is slow to import

        if self.method not in METHODS:
            raise UserError(f"pass 'quantize': method '{self.method}' unknown (known: {', '.join(METHODS)})")
        if not ctx.calibrated:
            raise UserError("pass 'quantize' calibrates on the user's data: give --calib DATA.npz")
        model = quantize(gs.export_onnx(graph), ctx.samples[: self.max_samples], self.method, self.per_channel, self.pow2)
        return gs.import_onnx(model)
