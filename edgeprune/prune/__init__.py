"""Structured (channel/filter) pruning of ONNX graphs from a channel dependency graph.

rules.py: per-op coupling and rewrite rules (one table); depgraph.py: channel spaces, ties,
groups and their trace; importance.py: criteria (one table; the data ones measure calibration
samples); pruner.py: selection, the real removal, and the masked model that is its exactness
oracle; reconstruct.py: recovery without training (least squares, BatchNorm re-estimation).
"""
from edgeprune.prune.depgraph import DepGraph, Group, build, format_group
from edgeprune.prune.importance import CRITERIA, importance
from edgeprune.prune.pruner import GroupReport, PruneReport, apply_removal, mask, prune
from edgeprune.prune.rules import RULES, Rule

__all__ = [
    "DepGraph", "Group", "build", "format_group", "CRITERIA", "importance", "GroupReport", "PruneReport",
    "apply_removal", "mask", "prune", "RULES", "Rule",
]
