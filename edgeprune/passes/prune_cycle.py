"""The prune cycle as a pass (`prune --schedule`, or `prune-cycle` in a recipe); the cycle is edgeprune.prune.schedule."""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from edgeprune.context import Context
from edgeprune.data import load_npz
from edgeprune.errors import UserError
from edgeprune.passes.base import Pass
from edgeprune.prune.schedule import prune_cycle


@dataclass
class PruneCycle(Pass):
    """The cycle as a pass: the pipeline's calibration data (`--eval`) is what each step is measured on."""

    name = "prune-cycle"
    schedule: str = "agp"
    steps: int = 5
    budget: float = 1.0  # accuracy points the cycle may lose
    unstructured: bool = False
    sparsity: float = 0.0  # unstructured: final fraction of zero weights
    ratio: float = 0.0  # structured: final channel ratio per group
    target_macs: float = 0.0  # structured: final fraction of MACs kept
    target_params: float = 0.0  # structured: final fraction of parameters kept
    layer_ratios: dict = field(default_factory=dict)  # layer -> final ratio (a sensitivity proposal)
    scope: str = "local"
    criterion: str = "l1"
    allocate_by: str = ""  # criterion whose ranking sets each group's channel count ("": criterion)
    round_to: int = 1
    min_channels: int = 1
    protect: list = field(default_factory=list)
    recovery: str = "auto"  # auto: finetune with epochs, else reconstruct (structured) or none
    train: str = ""  # .npz of training data (fine-tuning, reconstruction); the eval data when empty
    epochs: int = 0  # fine-tuning epochs per step
    batch_size: int = 64
    lr: float = 0.01
    distill: bool = False
    temperature: float = 4.0
    alpha: float = 0.7
    rewind: bool = False
    splice: bool = False
    seed: int = 0
    threads: int = 0  # torch threads (0: torch's default)
    bars: bool = False  # fine-tuning progress bars

    def run(self, graph: gs.Graph, ctx: Context) -> gs.Graph:
        if not ctx.calibrated:
            raise UserError("prune --schedule: give the data each step is measured on (--eval DATA.npz)")
        model = gs.export_onnx(graph)
        train = load_npz(self.train, model) if self.train else None
        final, report = prune_cycle(model, ctx.samples, ctx.labels, self, train=train, progress=ctx.progress)
        ctx.report(cycle=report.as_dict())
        return gs.import_onnx(final)
