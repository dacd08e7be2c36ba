"""The contract between the pipeline and a back end."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import onnx

from edgeprune.compile.source import Source
from edgeprune.targets import Target


@dataclass
class BuildOutput:
    """Files a back end wrote into the bundle folder (relative paths) and facts for the manifest."""

    files: list[str]
    info: dict = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def check_toolchain(self, target: Target) -> None:
        """Raise UserError before any work if a compiler the target needs is missing."""

    def unsupported_ops(self, model: onnx.ModelProto) -> dict[str, list[str]]: ...

    def build(self, source: Source, target: Target, out_dir: Path, samples: list[dict]) -> BuildOutput: ...
