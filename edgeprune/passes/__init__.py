"""One module per pass; this table is how recipes name them."""
from __future__ import annotations

from typing import Any

from edgeprune.errors import UserError
from edgeprune.passes.base import Pass
from edgeprune.passes.canonicalize import Canonicalize
from edgeprune.passes.channel_prune import ChannelPrune
from edgeprune.passes.fold_batchnorm import FoldBatchNorm
from edgeprune.passes.magnitude_prune import MagnitudePrune
from edgeprune.passes.quantize import Quantize
from edgeprune.passes.share_weights import ShareWeights
from edgeprune.passes.prune_cycle import PruneCycle

PASSES: dict[str, type[Pass]] = {cls.name: cls for cls in (Canonicalize, ChannelPrune, FoldBatchNorm, MagnitudePrune,
                                                           PruneCycle, Quantize, ShareWeights)}


def make_pass(name: str, options: dict[str, Any] | None = None, where: str = "recipe") -> Pass:
    if name not in PASSES:
        raise UserError(f"{where}: unknown pass '{name}' (known: {', '.join(PASSES)})")
    return PASSES[name].from_options(options or {}, where)


__all__ = ["PASSES", "Pass", "make_pass"]
