"""Every user mistake: exit 2, one line on stderr naming what is wrong, no output folder."""
from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

from conftest import EXAMPLE, conv_model


def _write(path, model: onnx.ModelProto):
    path.write_bytes(model.SerializeToString())
    return path


def _cycle(tmp_path):
    m = conv_model()
    relu = m.graph.node[1]
    relu.input[0] = "g"  # relu reads pool's output, pool reads relu's: a cycle
    return _write(tmp_path / "cycle.onnx", m)


def _missing_initializer(tmp_path):
    m = conv_model()
    del m.graph.initializer[0]  # W
    return _write(tmp_path / "missing.onnx", m)


def _unknown_domain(tmp_path):
    m = conv_model()
    m.graph.node[1].domain = "com.example.custom"
    m.opset_import.append(helper.make_opsetid("com.example.custom", 1))
    return _write(tmp_path / "domain.onnx", m)


def _truncated(tmp_path):
    data = EXAMPLE.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_bytes(b"these are not the bytes of an ONNX model\n" * 10)
    return path


CASES = {
    "truncated": (_truncated, "truncated.onnx"),
    "not onnx": (_not_onnx, "notes.onnx"),
    "cycle": (_cycle, "cycle"),
    "missing initializer": (_missing_initializer, "'W'"),
    "unknown domain": (_unknown_domain, "com.example.custom"),
    "missing file": (lambda tmp: tmp / "nope.onnx", "nope.onnx: no such file"),
}


def _assert_user_error(code, out, err, must_name):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert must_name in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("case", CASES)
def test_bad_model_compile(case, tmp_path, cli):
    make, must_name = CASES[case]
    model = make(tmp_path)
    out_dir = tmp_path / "bundle"
    _assert_user_error(*cli("compile", model, "--target", "host", "-o", out_dir), must_name)
    assert not out_dir.exists()
    assert not any(p.name.startswith(".bundle") for p in tmp_path.iterdir())


@pytest.mark.parametrize("case", ["truncated", "cycle", "missing initializer", "unknown domain"])
def test_bad_model_inspect(case, tmp_path, cli):
    make, must_name = CASES[case]
    _assert_user_error(*cli("inspect", make(tmp_path)), must_name)


def test_unknown_target(tmp_path, cli):
    out_dir = tmp_path / "bundle"
    _assert_user_error(*cli("compile", EXAMPLE, "--target", "rpi99", "-o", out_dir), "rpi99")
    assert not out_dir.exists()


def test_bad_target_file_names_the_key(tmp_path, cli):
    bad = tmp_path / "board.toml"
    bad.write_text((EXAMPLE.parent.parent / "targets" / "rpi4.toml").read_text().replace("\ncores = 4", "\ncores = \"four\""))
    _assert_user_error(*cli("compile", EXAMPLE, "--target", bad, "-o", tmp_path / "b"), "device.cores")


def test_unknown_recipe_key(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{EXAMPLE}"\ntarget = "host"\noutput = "out"\nmodle_typo = 1\n')
    _assert_user_error(*cli("run", recipe), "modle_typo")
    assert not (tmp_path / "out").exists()


def test_unknown_pass_option(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{EXAMPLE}"\ntarget = "host"\noutput = "out"\n[[passes]]\nname = "canonicalize"\nratio = 0.5\n')
    _assert_user_error(*cli("run", recipe), "ratio")


def test_dynamic_dims_need_a_shape(tmp_path, cli):
    m = conv_model()
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    model = _write(tmp_path / "dyn.onnx", m)
    _assert_user_error(*cli("compile", model, "--target", "host", "-o", tmp_path / "b"), "--input-shape x=")


def test_bad_input_shape_option(cli):
    _assert_user_error(*cli("inspect", EXAMPLE, "--input-shape", "input=1,x,28"), "--input-shape")


def test_unknown_option_is_one_line(cli):
    _assert_user_error(*cli("inspect", EXAMPLE, "--targte", "host"), "--targte")


def test_refuses_to_overwrite(tmp_path, cli):
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "precious.txt").write_text("keep me")
    _assert_user_error(*cli("compile", EXAMPLE, "--target", "host", "-o", existing), "--force")
    _assert_user_error(*cli("compile", EXAMPLE, "--target", "host", "-o", existing, "--force"), "not written by edgeprune")
    assert (existing / "precious.txt").read_text() == "keep me"


def test_entry_point_exit_code(tmp_path):
    """The installed command, as a user runs it: exit 2 and one line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "edgeprune.cli", "inspect", str(tmp_path / "absent.onnx")],
                          capture_output=True, text=True)
    _assert_user_error(proc.returncode, proc.stdout, proc.stderr, "absent.onnx")
