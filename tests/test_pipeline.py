"""Passes and recipes: the record each pass leaves, recipes and CLI overrides."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from conftest import EXAMPLE
from edgeprune.context import Context
from edgeprune.errors import PassError, UserError
from edgeprune.graph import load_model
from edgeprune.data import random_samples
from edgeprune.passes import Pass, make_pass
from edgeprune.pipeline import load_recipe, run_passes


def test_canonicalize_record():
    model = load_model(EXAMPLE)
    ctx = Context(samples=None)
    ctx.samples = random_samples(_static(model), 3)
    out = run_passes(model, [make_pass("canonicalize")], ctx)
    (record,) = ctx.records
    assert record.name == "canonicalize" and record.structural
    assert record.before["nodes"] == 22 and record.after["nodes"] == len(out.graph.node) == 19
    assert record.after["macs"] > 0 and record.before["params"] <= record.after["params"]
    assert record.difference == {"max_abs_error": 0.0, "mean_abs_error": 0.0, "top1_agreement": 1.0}
    assert record.seconds >= 0 and "seconds" not in record.as_dict(timing=False)


def _static(model):
    from edgeprune.pipeline import _with_static_inputs

    return _with_static_inputs(model, {}, "m")


@dataclass
class _ScaleWeights(Pass):
    """A pass that changes numbers, to see the pipeline measure it."""

    name = "scale-test"
    factor: float = 1.01

    def run(self, graph: gs.Graph, ctx: Context) -> gs.Graph:
        for tensor in graph.tensors().values():
            if isinstance(tensor, gs.Constant) and tensor.values.dtype == np.float32:
                tensor.values = tensor.values * np.float32(self.factor)
        return graph


@dataclass
class _Breaker(Pass):
    name = "break-test"

    def run(self, graph: gs.Graph, ctx: Context) -> gs.Graph:
        graph.nodes[0].inputs[1] = gs.Variable("nowhere", dtype=np.float32)
        return graph


def test_pipeline_measures_error_and_catches_broken_passes():
    model = _static(load_model(EXAMPLE))
    ctx = Context(samples=random_samples(model, 2))
    run_passes(model, [make_pass("canonicalize"), _ScaleWeights()], ctx)
    assert ctx.records[1].difference["max_abs_error"] > 1e-3
    with pytest.raises(PassError, match="break-test"):
        run_passes(model, [_Breaker()], Context(samples=random_samples(model, 1)))


def test_recipe_paths_are_relative_to_the_recipe(tmp_path):
    (tmp_path / "r.toml").write_text('model = "m.onnx"\ntarget = "rpi4"\noutput = "out"\nsamples = 3\n'
                                     'input_shapes = { input = [1, 1, 28, 28] }\n[[passes]]\nname = "canonicalize"\n')
    recipe = load_recipe(tmp_path / "r.toml")
    assert recipe.model == str(tmp_path / "m.onnx") and recipe.output == str(tmp_path / "out")
    assert recipe.samples == 3 and recipe.input_shapes == {"input": [1, 1, 28, 28]}


@pytest.mark.parametrize("text, match", [
    ('target = "host"\n', "missing required key 'model'"),
    ('model = "m.onnx"\nsamples = "two"\n', "'samples' must be of type int"),
    ('model = "m.onnx"\n[[passes]]\nname = "magic"\n', "unknown pass 'magic'"),
    ('model = "m.onnx"\ninput_shapes = { x = [1, -3] }\n', "input_shapes.x"),
    ('model = = \n', "not valid TOML"),
])
def test_recipe_errors(tmp_path, text, match):
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(UserError, match=match):
        load_recipe(tmp_path / "r.toml")


def test_cli_run_recipe_with_overrides(tmp_path, cli):
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32))
    (tmp_path / "r.toml").write_text(f'model = "{EXAMPLE}"\ntarget = "rpi4"\noutput = "ignored"\ncalib = "calib.npz"\n')
    code, out, err = cli("run", tmp_path / "r.toml", "--target", "host", "-o", tmp_path / "b", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["target"] == "host" and result["build"]["samples"] == 3
    assert not (tmp_path / "ignored").exists()
    code, out, err = cli("verify", tmp_path / "b", "--json")
    assert code == 0 and json.loads(out)["ok"] is True


def test_cli_inspect_json(cli):
    code, out, err = cli("inspect", EXAMPLE, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["macs"] == 6_435_392 and data["ops"]["Conv"] == 5
    assert data["inputs"] == [{"name": "input", "shape": ["N", 1, 28, 28]}]
    assert data["unsupported"]["rpi4"] == {}
    assert sum(n["macs"] for n in data["nodes"]) == data["macs"]


def test_calib_errors_name_the_file(tmp_path, cli):
    np.savez(tmp_path / "c.npz", image=np.zeros((2, 1, 28, 28), np.float32))
    code, _, err = cli("compile", EXAMPLE, "--target", "host", "-o", tmp_path / "b", "--calib", tmp_path / "c.npz")
    assert code == 2 and "c.npz: no array named 'input'" in err and not (tmp_path / "b").exists()
