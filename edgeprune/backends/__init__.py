"""What each kind of target needs beyond the shared TVM build, one module per kind."""
from __future__ import annotations

from edgeprune.backends import arm_linux, host, micro
from edgeprune.backends.base import Backend, BuildOutput
from edgeprune.backends.vta import backend as vta
from edgeprune.errors import UserError
from edgeprune.targets import Target

BACKENDS: dict[str, Backend] = {"host": host.BACKEND, "arm-linux": arm_linux.BACKEND, "micro": micro.BACKEND, "vta": vta.BACKEND}


def backend_for(target: Target) -> Backend:
    if target.kind not in BACKENDS:
        raise UserError(f"--target {target.name}: no back end for kind '{target.kind}' in this version")
    return BACKENDS[target.kind]


__all__ = ["BACKENDS", "Backend", "BuildOutput", "backend_for"]
