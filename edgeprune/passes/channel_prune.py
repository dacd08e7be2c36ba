"""Structured (channel/filter) pruning as a pass; see edgeprune.prune for the dependency graph.

Unlike magnitude pruning, the tensors shrink, so the model gets faster on every back end. The
default rounding keeps channel counts at multiples of the target's vector lanes (fp32), so the
pruned layers still fill the vectors the schedules tile them into.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx_graphsurgeon as gs

from edgeprune.context import Context
from edgeprune.errors import UserError
from edgeprune.passes.base import Pass


RANK_SAMPLES = 1024  # calibration samples the data criteria rank channels on; the recovery fits on all of them


def default_round_to(ctx: Context) -> int:
    """The target's channel multiple (fp32 vector lanes on CPUs, 16 on VTA); 1 when no target is known."""
    return ctx.target.channel_multiple if ctx.target is not None else 1


@dataclass
class ChannelPrune(Pass):
    name = "prune"
    ratio: float = 0.0  # fraction of channels per group (ignored when a MAC or parameter target is given)
    target_macs: float = 0.0  # fraction of MACs to keep (0: no MAC target)
    target_params: float = 0.0  # fraction of parameters to keep (0: no parameter target)
    scope: str = "local"
    criterion: str = "l1"
    allocate_by: str = ""  # criterion whose ranking sets how many channels each group keeps ("": criterion)
    round_to: int = 0  # 0: from the target (vector lanes)
    protect: list = field(default_factory=list)
    min_channels: int = 1
    grouped_conv: str = "equal"  # grouped (not depthwise) Convs: "equal" counts per group, or "whole" groups
    reconstruct: bool = False  # refit the layers reading pruned channels on the calibration data (least squares)
    reconstruct_relu: bool = False  # with reconstruct: layers followed by (BN and) Relu are fit on the ReLU's output

    def run(self, graph: gs.Graph, ctx: Context) -> gs.Graph:
        from edgeprune.prune import CRITERIA, prune

        if self.reconstruct_relu and not self.reconstruct:
            raise UserError("prune: reconstruct_relu is a way to reconstruct: set reconstruct too")
        if self.reconstruct and not ctx.calibrated:
            raise UserError("prune: reconstruct fits layers to the user's data: give calibration data (--calib)")
        for criterion in (self.criterion, self.allocate_by):
            if criterion in CRITERIA and CRITERIA[criterion].data and not ctx.calibrated:
                raise UserError(f"prune: criterion '{criterion}' ranks channels on the user's data: give calibration "
                                "data (--calib)")
        source = gs.export_onnx(graph)
        pruned, report = prune(
            source, ratio=None if self.target_macs or self.target_params else self.ratio,
            target_macs=self.target_macs or None, target_params=self.target_params or None, scope=self.scope,
            criterion=self.criterion, round_to=self.round_to or default_round_to(ctx), protect=tuple(self.protect),
            min_channels=self.min_channels, samples=ctx.samples[:RANK_SAMPLES] if ctx.calibrated else None,
            grouped_conv=self.grouped_conv, allocate_by=self.allocate_by or None)
        details = report.as_dict()
        details.pop("removed")  # channel indices per tensor: large, and the groups already say what went
        if self.reconstruct:
            from edgeprune.prune.reconstruct import recover

            ctx.progress("prune: reconstruct the layers after pruned channels")
            pruned, recovery = recover(source, pruned, report.removed, ctx.samples, relu=self.reconstruct_relu)
            details["reconstruction"] = [layer.as_dict() for layer in recovery.layers]
            details["batchnorm"] = [asdict(norm) for norm in recovery.batchnorm]
            details["output_refit"] = [layer.as_dict() for layer in recovery.outputs]
        ctx.report(**details)
        return gs.import_onnx(pruned)
