"""Unstructured and N:M magnitude pruning: exact zeros where the weights are smallest."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import EXAMPLE
from edgeprune.context import Context
from edgeprune.data import random_samples
from edgeprune.errors import UserError
from edgeprune.graph import canonicalize, load_model
from edgeprune.passes import make_pass
from edgeprune.passes.magnitude_prune import nm_mask
from edgeprune.pipeline import run_passes
from onnx import numpy_helper


@pytest.fixture(scope="module")
def model():
    return canonicalize(load_model(EXAMPLE))


def _prune(model, **options):
    ctx = Context(samples=random_samples(model, 2))
    out = run_passes(model, [make_pass("magnitude-prune", options)], ctx)
    return out, ctx.records[-1]


def _weights(model):
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm")}
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name in conv_weights}


def test_local_sparsity_per_layer(model):
    out, record = _prune(model, sparsity=0.6)
    for name, w in _weights(out).items():
        if w.size >= 64:
            assert abs((w == 0).mean() - 0.6) < 0.02, name
    assert abs(record.details["sparsity"] - 0.6) < 0.02
    assert record.difference["max_abs_error"] > 0


def test_global_threshold_prunes_small_weights_first(model):
    out, record = _prune(model, sparsity=0.5, scope="global")
    before, after = _weights(model), _weights(out)
    kept = np.concatenate([np.abs(before[n][after[n] != 0]) for n in after if before[n].size >= 64])
    dropped = np.concatenate([np.abs(before[n][after[n] == 0]) for n in after if before[n].size >= 64])
    assert dropped.max() <= kept.min()
    sparsities = [layer["sparsity"] for layer in record.details["layers"].values()]
    assert max(sparsities) - min(sparsities) > 0.05  # layers differ under one threshold


def test_zero_sparsity_changes_nothing(model):
    _, record = _prune(model, sparsity=0.0)
    assert record.difference["max_abs_error"] == 0.0


def test_protected_layer_is_untouched(model):
    out, _ = _prune(model, sparsity=0.7, protect=["block2.conv"])
    protected = next(n.input[1] for n in out.graph.node if n.name == "block2.conv")
    assert (_weights(out)[protected] != 0).all()
    with pytest.raises(UserError, match="no node named 'nope'"):
        _prune(model, sparsity=0.5, protect=["nope"])


def test_nm_2_4():
    w = np.random.default_rng(0).standard_normal((8, 10, 3, 3)).astype(np.float32)
    keep = nm_mask(w, axis=1, n=2, m=4)
    groups = np.moveaxis(keep, 1, -1)[..., :8].reshape(8, 3, 3, 2, 4)
    assert (groups.sum(-1) == 2).all()
    tail = np.moveaxis(keep, 1, -1)[..., 8:]  # the last, short group of 2 keeps both
    assert tail.all()
    magnitude = np.moveaxis(np.abs(w), 1, -1)[..., :8].reshape(8, 3, 3, 2, 4)
    assert (np.where(groups, magnitude, np.inf).min(-1) >= np.where(groups, -np.inf, magnitude).max(-1)).all()


def test_cli_prune_unstructured_json(tmp_path, cli):
    import json

    code, out, err = cli("prune", EXAMPLE, "-o", tmp_path / "p.onnx", "--unstructured", "--sparsity", "0.8",
                         "--scope", "global", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert {"params_before", "params_after", "macs_before", "macs_after", "layers"} <= set(d)
    assert abs(d["sparsity_achieved"] - 0.8) < 0.01 and d["macs_after"] == d["macs_before"]
    code, _, err = cli("prune", EXAMPLE, "-o", tmp_path / "q.onnx", "--unstructured", "--nm", "3:2")
    assert code == 2 and "--nm 3:2" in err and not (tmp_path / "q.onnx").exists()
