"""One object carries what every pass may need and collects what each pass did (as TVM's PassContext)."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from edgeprune.targets import Target


@dataclass
class PassRecord:
    """What one pass did; `seconds` stays out of bundles so that they are reproducible."""

    name: str
    options: dict[str, Any]
    structural: bool
    seconds: float
    before: dict[str, int]
    after: dict[str, int]
    difference: dict[str, Any] | None
    details: dict[str, Any] = field(default_factory=dict)  # what the pass itself reports (per layer, per group)

    def as_dict(self, timing: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not timing:
            data.pop("seconds")
        return data


@dataclass
class Context:
    """Calibration samples (feeds per run), the target, a logger, progress, and the pass record."""

    samples: list[dict[str, np.ndarray]] = field(default_factory=list)
    labels: np.ndarray | None = None
    calibrated: bool = False  # samples are the user's data, not seeded random stand-ins
    target: Target | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    records: list[PassRecord] = field(default_factory=list)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("edgeprune"))
    progress: Callable[[str], None] = lambda message: None
    details: dict[str, Any] = field(default_factory=dict)  # filled by the running pass, moved into its record

    def report(self, **details: Any) -> None:
        """A pass's own findings (per-layer sparsity, bits, errors) for its record."""
        self.details.update(details)
