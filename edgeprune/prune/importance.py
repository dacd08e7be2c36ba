"""Importance of every removable unit (atom) of a group, from every parameter coupled to it.

A criterion scores the atoms of one group; the table CRITERIA maps the user's name to it, so new
criteria (bn-scale, activation statistics, redundancy, reconstruction error) plug in as entries.
Scores are normalized per group (divided by the group's mean) so that global ranking compares
"how weak is this channel in its own layer" instead of "which layer has larger weights".
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgeprune.errors import UserError
from edgeprune.prune.depgraph import Group

Criterion = Callable[[Group], np.ndarray]


def _magnitude(power: int) -> Criterion:
    """L-p norm over the out-filters, BN gammas and in-slices of each atom, each slice counted once."""

    def score(group: Group) -> np.ndarray:
        per_param = []
        for p in group.params:
            values = np.abs(np.asarray(p.const.values, dtype=np.float64)) ** power
            axes = tuple(a for a in range(values.ndim) if a != p.axis)
            per_param.append(values.sum(axis=axes) if axes else values)
        scores = np.zeros(group.size)
        for k, atom in enumerate(group.atoms):
            seen: set[tuple[int, int, int]] = set()
            for pid, p in enumerate(group.params):
                for channel in atom.get(p.tensor, ()):
                    key = (id(p.const), p.axis, int(p.index[channel]))
                    if key not in seen:
                        seen.add(key)
                        scores[k] += per_param[pid][p.index[channel]]
        return scores ** (1.0 / power)

    return score


CRITERIA: dict[str, Criterion] = {
    "l1": _magnitude(1),
    "l2": _magnitude(2),
}


def importance(group: Group, criterion: str = "l1") -> np.ndarray:
    """Per-atom scores of a group, normalized to mean 1 (all zeros stay zeros)."""
    if criterion not in CRITERIA:
        raise UserError(f"criterion '{criterion}': expected one of {', '.join(CRITERIA)}")
    scores = CRITERIA[criterion](group)
    mean = float(scores.mean()) if scores.size else 0.0
    return scores / mean if mean > 0 else scores
