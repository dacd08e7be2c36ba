"""An emulated 64-bit Raspberry Pi: an aarch64 Debian user space with TVM's runtime under qemu.

Timings under emulation mean nothing; what it proves is that a bundle built for the board loads in
TVM's aarch64 runtime and computes the right numbers. Built once (about 1.5 minutes, 700 MB) into a
cache outside the repository, then an RPC server starts from it in about 20 seconds.
Recipe: ../shared/TVM-NOTES.md. There is no binfmt_misc here, so the RPC server's worker processes
re-enter qemu through a small launcher that `sys.executable` points at.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from edgeprune.errors import UserError

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PYTHON = "python3.11"
# The aarch64 wheels the runtime needs; the TVM pins are the project's own (pyproject.toml).
WHEELS = ["apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post0", "numpy", "ml_dtypes", "typing_extensions",
          "cloudpickle", "psutil"]
ARCHES = {"aarch64": ("arm64", "qemu-aarch64-static", "manylinux_2_28_aarch64")}
HOST_PACKAGES = {"debootstrap": "debootstrap", "qemu-aarch64-static": "qemu-user-static", "dpkg-deb": "dpkg"}


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEPRUNE_CACHE", Path.home() / ".cache" / "edgeprune"))


def _need_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pkgs = " ".join(sorted({HOST_PACKAGES[t] for t in missing}))
        raise UserError(f"emulator: {', '.join(missing)} not found (apt-get install {pkgs}; tools/setup.sh does it)")


def _run(cmd: list[str], what: str, **kwargs) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"emulator: {what} failed: {tail[0]}")


def ensure_image(arch: str = "aarch64", progress=lambda message: None) -> Path:
    """The cached root file system with TVM's runtime in it; built on first use, atomically."""
    deb_arch, qemu, platform = ARCHES[arch]
    image = cache_dir() / f"emulator-{arch}-{SUITE}"
    if (image / "ready").is_file():
        return image
    _need_tools("debootstrap", qemu, "dpkg-deb")
    if os.geteuid() != 0:
        raise UserError("emulator: building the emulator image needs root (debootstrap); run once as root")
    tmp = image.with_name(image.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    rootfs, site = tmp / "rootfs", tmp / "site"
    try:
        progress(f"emulator: debootstrap {SUITE} {deb_arch}")
        _run(["debootstrap", "--foreign", f"--arch={deb_arch}", "--variant=minbase",
              f"--include={PYTHON},libstdc++6,libgomp1", SUITE, str(rootfs), MIRROR], "debootstrap")
        progress("emulator: unpacking packages")
        for deb in sorted((rootfs / "var/cache/apt/archives").glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(rootfs)], f"unpacking {deb.name}")
        progress("emulator: installing the TVM runtime wheels")
        _run([sys.executable, "-m", "pip", "install", "-q", "--target", str(site), "--platform", platform,
              "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:",
              "--no-deps", *WHEELS], "pip install of the aarch64 wheels")
        (tmp / "ready").write_text(f"{SUITE} {arch}\n")
        shutil.rmtree(image, ignore_errors=True)
        os.rename(tmp, image)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return image


def launcher(image: Path, arch: str = "aarch64") -> Path:
    """A host script that runs the emulated Python; written each start so the image can move."""
    qemu = shutil.which(ARCHES[arch][1])
    script = image / "python"
    script.write_text(f'#!/bin/sh\nPYTHONPATH="{image / "site"}" exec "{qemu}" -L "{image / "rootfs"}" '
                      f'"{image / "rootfs" / "usr" / "bin" / PYTHON}" "$@"\n')
    script.chmod(0o755)
    (image / "site" / "sitecustomize.py").write_text(f"import sys\nsys.executable = {str(script)!r}\n")
    return script


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def start_rpc_server(port: int = 9190, host: str = "127.0.0.1", arch: str = "aarch64", timeout: float = 180.0,
                     progress=lambda message: None) -> subprocess.Popen:
    """Start TVM's RPC server in the emulator and wait until it accepts connections."""
    if port_open(host, port):
        raise UserError(f"emulator: port {host}:{port} is already in use (choose another with --port)")
    image = ensure_image(arch, progress)
    python = launcher(image, arch)
    progress(f"emulator: starting the RPC server on {host}:{port}")
    server = subprocess.Popen([str(python), "-m", "tvm.exec.rpc_server", "--host", host, "--port", str(port),
                               "--port-end", str(port + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(f"emulator: the RPC server exited: {server.stderr.read().decode().strip()[-300:]}")
        if port_open(host, port):
            return server
        time.sleep(0.5)
    stop(server)
    raise UserError(f"emulator: the RPC server did not listen on {host}:{port} within {timeout:.0f} s")


def stop(server: subprocess.Popen) -> None:
    """Stop the server and the workers it forked (they share its session)."""
    import signal

    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
