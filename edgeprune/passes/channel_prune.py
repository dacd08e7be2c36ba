"""Structured (channel/filter) pruning as a pass; see edgeprune.prune for the dependency graph.

Unlike magnitude pruning, the tensors shrink, so the model gets faster on every back end. The
default rounding keeps channel counts at multiples of the target's vector lanes (fp32), so the
pruned layers still fill the vectors the schedules tile them into.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from edgeprune.context import Context
from edgeprune.errors import UserError
from edgeprune.passes.base import Pass


def default_round_to(ctx: Context) -> int:
    """Vector lanes of fp32 on the target's CPU; 1 when no target is known."""
    if ctx.target is None:
        return 1
    return max(1, ctx.target.vector_bits // 32)


@dataclass
class ChannelPrune(Pass):
    name = "prune"
    ratio: float = 0.0  # fraction of channels per group (ignored when a MAC or parameter target is given)
    target_macs: float = 0.0  # fraction of MACs to keep (0: no MAC target)
    target_params: float = 0.0  # fraction of parameters to keep (0: no parameter target)
    scope: str = "local"
    criterion: str = "l1"
    round_to: int = 0  # 0: from the target (vector lanes)
    protect: list = field(default_factory=list)
    min_channels: int = 1
    reconstruct: bool = False  # refit the layers reading pruned channels on the calibration data (least squares)

    def run(self, graph: gs.Graph, ctx: Context) -> gs.Graph:
        from edgeprune.prune import prune

        if self.reconstruct and not ctx.calibrated:
            raise UserError("prune: reconstruct fits layers to the user's data: give calibration data (--calib)")
        source = gs.export_onnx(graph)
        pruned, report = prune(
            source, ratio=None if self.target_macs or self.target_params else self.ratio,
            target_macs=self.target_macs or None, target_params=self.target_params or None, scope=self.scope,
            criterion=self.criterion, round_to=self.round_to or default_round_to(ctx), protect=tuple(self.protect),
            min_channels=self.min_channels)
        details = report.as_dict()
        details.pop("removed")  # channel indices per tensor: large, and the groups already say what went
        if self.reconstruct:
            from edgeprune.prune.reconstruct import reconstruct

            ctx.progress("prune: reconstruct the layers after pruned channels")
            pruned, layers = reconstruct(source, pruned, report.removed, ctx.samples)
            details["reconstruction"] = [layer.as_dict() for layer in layers]
        ctx.report(**details)
        return gs.import_onnx(pruned)
