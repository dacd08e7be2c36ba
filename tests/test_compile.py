"""The first compile path: host build checked against onnxruntime, Raspberry Pi cross builds reproducible."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import EXAMPLE
from edgeprune.artifact import verify
from edgeprune.backends.host import run_library
from edgeprune.graph import load_model, random_inputs, run
from edgeprune.pipeline import compile_model


def _elf_machine(path) -> int:
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF"
    return int.from_bytes(data[18:20], "little")


def test_host_build_matches_onnxruntime(tmp_path):
    result = compile_model(EXAMPLE, "host", tmp_path / "b", samples=3)
    check = result.manifest["build"]["vs_reference"]
    assert check["max_abs_error"] <= 1e-4 and check["top1_agreement"] == 1.0
    # and independently of the backend's own check: fresh inputs, the bundle's files only
    model = load_model(tmp_path / "b" / "model.onnx")
    feeds = random_inputs(model, seed=42)
    (got,) = run_library(tmp_path / "b" / "model.so", feeds, ["input"])
    np.testing.assert_allclose(got, run(model, feeds)["logits"], atol=1e-4, rtol=1e-4)
    verify(tmp_path / "b")


def test_bundle_runs_without_edgeprune(tmp_path):
    """The bundle's own runner needs only TVM's runtime and numpy, and checks itself against onnxruntime's outputs."""
    import ast
    import subprocess
    import sys

    compile_model(EXAMPLE, "host", tmp_path / "b")
    runner = tmp_path / "b" / "run_model.py"
    tree = ast.parse(runner.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"argparse", "json", "sys", "pathlib", "numpy", "tvm"}
    proc = subprocess.run([sys.executable, str(runner), "--repeat", "3"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "logits: shape [1, 10]" in proc.stdout and "(OK)" in proc.stdout and "latency: median" in proc.stdout


def test_manifest_contents(tmp_path):
    m = compile_model(EXAMPLE, "host", tmp_path / "b").manifest
    assert m["inputs"] == [{"name": "input", "shape": [1, 1, 28, 28], "dtype": "float32"}]
    assert m["outputs"] == [{"name": "logits", "shape": [1, 10], "dtype": "float32"}]
    assert set(m["versions"]) >= {"edgeprune", "onnx", "onnxruntime", "apache-tvm", "numpy"}
    assert [p["name"] for p in m["passes"]] == ["canonicalize", "fold-batchnorm"]
    assert m["totals"]["nodes"] == 14  # five BatchNormalization nodes folded into their Convs
    assert set(m["files"]) == {"model.so", "model.onnx", "REPORT.md", "run_model.py", "check.npz", "README-device.md"}
    assert m["target"]["name"] == "host" and m["totals"]["macs"] == 6_435_392


@pytest.mark.cross
@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None, reason="needs g++-aarch64-linux-gnu (tools/setup.sh)")
def test_rpi4_bundle_is_reproducible(tmp_path, cli):
    for name in ("one", "two"):
        code, _, err = cli("compile", EXAMPLE, "--target", "rpi4", "-o", tmp_path / name)
        assert code == 0, err
        code, _, err = cli("verify", tmp_path / name)
        assert code == 0, err
    one = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*") if p.is_file()}
    two = {p.relative_to(tmp_path / "two"): p.read_bytes() for p in (tmp_path / "two").rglob("*") if p.is_file()}
    assert one == two
    assert _elf_machine(tmp_path / "one" / "model.so") == 183  # EM_AARCH64


@pytest.mark.cross
@pytest.mark.skipif(shutil.which("arm-linux-gnueabihf-g++") is None, reason="needs g++-arm-linux-gnueabihf (tools/setup.sh)")
def test_rpi_armv7_build(tmp_path):
    compile_model(EXAMPLE, "rpi-armv7", tmp_path / "b")
    assert _elf_machine(tmp_path / "b" / "model.so") == 40  # EM_ARM
    readme = (tmp_path / "b" / "README-device.md").read_text()  # no armv7 wheel: how to build the runtime there
    assert "--target tvm_runtime" in readme and "TVM_LIBRARY_PATH" in readme and "apache-tvm-ffi==0.1.14.post0" in readme
