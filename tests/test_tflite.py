"""TFLite input: compiled through TVM's TFLite frontend, checked against ai-edge-litert."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO

pytest.importorskip("ai_edge_litert", reason="needs the tflite extra (tools/setup.sh --dev installs it)")
pytest.importorskip("tflite", reason="needs the tflite extra (tools/setup.sh --dev installs it)")

FIXTURE = REPO / "tests" / "fixtures" / "face_detection_short_range.tflite"


def test_tflite_host_build_matches_litert(tmp_path, cli):
    code, out, err = cli("compile", FIXTURE, "--target", "host", "-o", tmp_path / "b", "--json")
    assert code == 0, err
    build = json.loads(out)["build"]
    assert build["reference"] == "tflite (ai-edge-litert)" and build["vs_reference"]["max_abs_error"] < 1e-3
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["model"] == "model.tflite" and manifest["passes"] == []
    assert manifest["inputs"] == [{"name": "input", "shape": [1, 128, 128, 3], "dtype": "float32"}]
    assert [o["name"] for o in manifest["outputs"]] == ["regressors", "classificators"]
    code, out, err = cli("profile", tmp_path / "b", "--repeat", "3", "--warmup", "1", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["max_abs_error"] < 1e-3 and set(d["baselines"]) == {"tflite"}


@pytest.mark.cross
@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None, reason="needs g++-aarch64-linux-gnu")
def test_tflite_rpi4_build(tmp_path, cli):
    code, _, err = cli("compile", FIXTURE, "--target", "rpi4", "-o", tmp_path / "b")
    assert code == 0, err
    assert (tmp_path / "b" / "model.so").read_bytes()[18] == 183  # EM_AARCH64


def test_bad_tflite_is_one_line(tmp_path, cli):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(FIXTURE.read_bytes()[:5000])
    code, _, err = cli("compile", broken, "--target", "host", "-o", tmp_path / "b")
    assert code == 2 and "broken.tflite" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_passes_refused_for_tflite(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text('model = "x.onnx"\n[[passes]]\nname = "canonicalize"\n')
    code, _, err = cli("compile", FIXTURE, "--target", "host", "-o", tmp_path / "b", "--recipe", recipe)
    assert code == 2 and "TFLite model compiles as it is" in err
