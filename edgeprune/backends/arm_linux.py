"""64- and 32-bit ARM Linux boards (Raspberry Pi): cross-compiled shared library for TVM's runtime."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgeprune.backends.base import BuildOutput
from edgeprune.backends.device_files import write_device_files
from edgeprune.compile.integer import arithmetic_dtypes
from edgeprune.compile.source import Source
from edgeprune.compile.tvm_build import build_module, unsupported_ops
from edgeprune.errors import UserError
from edgeprune.targets import Target

LIBRARY = "model.so"


def cross_compiler(target: Target) -> str:
    """The C++ cross compiler the target names, or a one-line error saying which package has it."""
    cxx = target.toolchain.get("cxx")
    if not cxx:
        raise UserError(f"target {target.name}: key 'toolchain.cxx' is required to cross-compile")
    if shutil.which(cxx) is None:
        pkgs = " ".join(target.toolchain.get("apt", [])) or "the cross toolchain"
        raise UserError(f"target {target.name}: cross compiler '{cxx}' not found (apt-get install {pkgs})")
    return cxx


@dataclass(frozen=True)
class ArmLinuxBackend:
    name: str = "arm-linux"

    def check_toolchain(self, target: Target) -> None:
        cross_compiler(target)

    def unsupported_ops(self, model: onnx.ModelProto) -> dict[str, list[str]]:
        return unsupported_ops(model)

    def build(self, source: Source, target: Target, out_dir: Path, samples: list[dict]) -> BuildOutput:
        from tvm.support import cc

        cxx = cross_compiler(target)
        mod = source.relax_module()
        build_module(mod, target).export_library(str(out_dir / LIBRARY), fcompile=cc.cross_compiler(cxx))
        files = [LIBRARY, *write_device_files(source, target, out_dir, LIBRARY)]
        return BuildOutput(files, {"library": LIBRARY, "cross_compiler": cxx, "arithmetic": arithmetic_dtypes(mod),
                                       "verified": "not run here: `edgeprune profile --rpc` runs it on the board"})


BACKEND = ArmLinuxBackend()
