"""Profiling a bundle: here with baselines, over RPC, through a tracker of two servers, and on an emulated Pi."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from conftest import EXAMPLE
from edgeprune.pipeline import compile_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-500:]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def host_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "host"
    compile_model(EXAMPLE, "host", out)
    return out


def test_local_profile_with_baselines(host_bundle, cli):
    code, out, err = cli("profile", host_bundle, "--repeat", "10", "--warmup", "2", "--original", EXAMPLE, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["runs"] == 10 and 0 < d["median_ms"] <= d["p90_ms"] <= d["p99_ms"] <= d["max_ms"]
    assert d["max_abs_error"] < 1e-4
    assert set(d["baselines"]) == {"onnxruntime", "onnxruntime (original)"}
    assert all(b["median_ms"] > 0 for b in d["baselines"].values())
    kernels = {k["name"] for k in d["operators"]}
    assert any("conv2d" in name for name in kernels) and "(vm)" in kernels
    assert abs(sum(k["percent"] for k in d["operators"]) - 100) < 1e-6


def test_unreachable_server_is_one_line(host_bundle, cli):
    start = time.monotonic()
    code, _, err = cli("profile", host_bundle, "--rpc", f"127.0.0.1:{_free_port()}", "--retries", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot reach the RPC server" in err
    assert time.monotonic() - start < 15
    code, _, err = cli("profile", host_bundle, "--rpc", "localhost")
    assert code == 2 and "HOST:PORT" in err


@contextmanager
def tracker_with_servers(key: str, count: int = 2) -> Iterator[int]:
    """A TVM RPC tracker on loopback with `count` servers registered under `key`; yields the tracker's port once
    it reports them all free (a server registers some time after it listens)."""
    from tvm import rpc

    tracker = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
                               str(tracker), "--port-end", str(tracker + 1)], stderr=subprocess.PIPE,
                              stdout=subprocess.DEVNULL)]
    try:
        _wait_port(tracker, procs[0])
        for _ in range(count):
            port = _free_port()
            procs.append(subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                           "--port", str(port), "--port-end", str(port + 1), "--tracker",
                                           f"127.0.0.1:{tracker}", "--key", key],
                                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL))
            _wait_port(port, procs[-1])
        deadline, free = time.monotonic() + 60, 0
        while time.monotonic() < deadline and free < count:
            time.sleep(0.5)
            free = rpc.connect_tracker("127.0.0.1", tracker).summary()["queue_info"].get(key, {}).get("free", 0)
        assert free == count, f"{free} of {count} servers registered with the tracker"
        yield tracker
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_tracker_with_two_servers(host_bundle, cli):
    """A tracker on loopback with two servers registered under one key hands out sessions to profile requests."""
    with tracker_with_servers("edge") as tracker:
        for _ in range(2):
            code, out, err = cli("profile", host_bundle, "--tracker", f"127.0.0.1:{tracker}", "--key", "edge",
                                 "--repeat", "5", "--json")
            assert code == 0, err
            d = json.loads(out)
            assert d["device"].startswith("tracker") and d["max_abs_error"] < 1e-4 and "baselines" not in d


needs_emulated_pi = pytest.mark.skipif(
    shutil.which("qemu-aarch64-static") is None or shutil.which("debootstrap") is None
    or shutil.which("aarch64-linux-gnu-g++") is None,
    reason="needs qemu-user-static, debootstrap and the aarch64 cross compiler (tools/setup.sh)")

@pytest.mark.emulator
@needs_emulated_pi
def test_rpi4_bundle_runs_on_an_emulated_pi(tmp_path, cli):
    from edgeprune.profile import emulator

    import onnx

    from test_schedules import CASES, _chain

    compile_model(EXAMPLE, "rpi4", tmp_path / "rpi4")
    # and NEON's own tiles of the pointwise rule: 1x1 convs with pixels in the lanes, flat and by rows
    onnx.save(onnx.shape_inference.infer_shapes(_chain(*CASES["pointwise-residual-and-fallbacks"])),
              tmp_path / "pointwise.onnx")
    compile_model(tmp_path / "pointwise.onnx", "rpi4", tmp_path / "pointwise")
    port = _free_port()
    server = emulator.start_rpc_server(port)
    try:
        for bundle in ("rpi4", "pointwise"):
            code, out, err = cli("profile", tmp_path / bundle, "--rpc", f"127.0.0.1:{port}", "--repeat", "3",
                                 "--warmup", "1", "--timeout", "30", "--json")
            assert code == 0, err
            d = json.loads(out)
            assert d["target"] == "rpi4" and d["device"] == f"rpc 127.0.0.1:{port}"
            check = np.load(tmp_path / bundle / "check.npz")  # the compiler's reference outputs (onnxruntime)
            scale = max(float(np.abs(check[f]).max()) for f in check.files if f.startswith("output:"))
            assert d["max_abs_error"] < 1e-4 * max(1.0, scale), (bundle, d["max_abs_error"], scale)
    finally:
        emulator.stop(server)
    # and the bundle's own runner, in the emulated board's Python with only TVM's runtime
    python = emulator.launcher(emulator.ensure_image())
    proc = subprocess.run([str(python), str(tmp_path / "rpi4" / "run_model.py"), "--repeat", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert "(OK)" in proc.stdout
