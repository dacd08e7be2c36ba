"""Where a bundle runs: this machine, a TVM RPC server (a board or the emulator), or a tracker of boards.

Connection failures and timeouts become one-line errors that say what to check and how to retry;
nothing here waits forever (the socket is probed with a timeout before TVM's client, which can hang).
"""
from __future__ import annotations

import platform
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.errors import UserError

# ELF e_machine of a library -> the uname -m values that can load it.
ELF_MACHINES = {62: ("x86_64", "amd64"), 183: ("aarch64", "arm64"), 40: ("armv7l", "armv6l")}


def parse_address(text: str, option: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{option} {text}: expected HOST:PORT")
    return host, int(port)


def probe(host: str, port: int, timeout: float, what: str, retries: int, delay: float = 2.0) -> None:
    """Fail fast and clearly when nothing listens at host:port; try `retries` more times first."""
    error: OSError | None = None
    for attempt in range(retries + 1):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as exc:
            error = exc
            if attempt < retries:
                time.sleep(delay)
    reason = "timed out" if isinstance(error, socket.timeout) else (error.strerror or str(error)).lower()
    raise UserError(f"cannot reach the {what} at {host}:{port} ({reason}); is it running? "
                    f"(retry with --retries N, wait longer with --timeout S)")


@dataclass
class Device:
    """A TVM device with the session that owns it; `remote` is None for this machine."""

    name: str
    remote: Any
    dev: Any

    def load(self, library: Path):
        """Load a bundle's library and return a Relax VM on this device."""
        from tvm import relax
        import tvm

        if self.remote is None:
            check_loadable_here(library)
            module = tvm.runtime.load_module(str(library))
        else:
            self.remote.upload(str(library))
            module = self.remote.load_module(library.name)
        return relax.VirtualMachine(module, self.dev)

    def tensor(self, array):
        import tvm

        return tvm.runtime.tensor(array, self.dev)


def check_loadable_here(library: Path) -> None:
    head = library.read_bytes()[:20]
    machine = int.from_bytes(head[18:20], "little") if head[:4] == b"\x7fELF" else None
    here = platform.machine().lower()
    if machine is not None and here not in ELF_MACHINES.get(machine, ()):
        arch = ELF_MACHINES.get(machine, (f"ELF machine {machine}",))[0]
        raise UserError(f"{library}: built for {arch}, this machine is {here}; profile it on the board with --rpc "
                        "(or under `edgeprune device emulate`)")


def connect(*, rpc: str | None = None, tracker: str | None = None, key: str | None = None,
            timeout: float = 10.0, retries: int = 0) -> Device:
    """This machine when neither rpc nor tracker is given."""
    import tvm
    from tvm import rpc as tvm_rpc

    if rpc and tracker:
        raise UserError("--rpc and --tracker: give one of them")
    if rpc:
        host, port = parse_address(rpc, "--rpc")
        probe(host, port, timeout, "RPC server", retries)
        try:
            remote = tvm_rpc.connect(host, port, session_timeout=0)
        except Exception as exc:  # TVM raises TVMError subclasses without a stable type
            raise UserError(f"--rpc {rpc}: RPC handshake failed: {str(exc).strip().splitlines()[0]}") from None
        return Device(f"rpc {host}:{port}", remote, remote.cpu(0))
    if tracker:
        if not key:
            raise UserError("--tracker needs --key (the device key the boards registered with)")
        host, port = parse_address(tracker, "--tracker")
        probe(host, port, timeout, "RPC tracker", retries)
        try:
            remote = tvm_rpc.connect_tracker(host, port).request(key, priority=1, session_timeout=0,
                                                                 max_retry=max(1, retries + 1))
        except Exception as exc:
            raise UserError(f"--tracker {tracker} --key {key}: no board granted: "
                            f"{str(exc).strip().splitlines()[0]}") from None
        return Device(f"tracker {host}:{port} key {key}", remote, remote.cpu(0))
    return Device("local", None, tvm.cpu(0))
