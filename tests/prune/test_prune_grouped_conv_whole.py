"""Grouped conv (ResNeXt) by whole groups: `group` shrinks, every kept group keeps all its channels."""
import json

import numpy as np
import onnx
import pytest

import zoo
from oracle import assert_exact, assert_identity_at_zero, assert_pruned, attr, shapes

from edgeprune.errors import UserError
from edgeprune.graph.runtime import random_inputs, run
from edgeprune.prune import build, mask


def grouped(model):
    return [n for n in model.graph.node if n.op_type == "Conv" and attr(model, n.name, "group", 1) > 1]


def test_identity_at_zero():
    assert_identity_at_zero(zoo.resnext(), grouped_conv="whole")


def test_a_unit_is_a_whole_group():
    """group=4 over 16 channels feeds group=2 over 16: a unit spans two 4-groups and one 8-group."""
    model = zoo.resnext()
    dg = build(model, grouped_conv="whole")
    g4, g2 = grouped(model)
    atoms = [atom for g in dg.groups for atom in g.atoms if g4.output[0] in atom]
    assert len(atoms) == 2
    for atom in atoms:
        for tensor, per in ((g4.input[0], 4), (g4.output[0], 4), (g2.input[0], 8), (g2.output[0], 12)):
            idx = np.sort(atom[tensor])
            assert len(idx) == 8 if per < 12 else len(idx) == 12
            assert np.array_equal(idx, np.concatenate([np.arange(k * per, (k + 1) * per) for k in np.unique(idx // per)]))


@pytest.mark.parametrize("scope", ["local", "global"])
def test_whole_groups_go(scope):
    model = zoo.resnext()
    pruned, report = assert_pruned(model, ratio=0.5, scope=scope, grouped_conv="whole")
    s, before = shapes(pruned), shapes(model)
    kept = {}
    for conv, groups in zip(grouped(model), (4, 2)):
        kept[groups] = attr(pruned, conv.name, "group")
        assert 1 <= kept[groups] <= groups
        # every kept group keeps its whole fan-in; only the filters of removed groups go
        assert s[conv.input[1]][1] == before[conv.input[1]][1]
        assert s[conv.input[1]][0] == before[conv.input[1]][0] // groups * kept[groups]
    assert kept[4] < 4 or kept[2] < 2
    assert report.grouped_conv == "whole"


def test_removed_groups_are_contiguous_blocks():
    model = zoo.resnext()
    _, report = assert_exact(model, ratio=0.5, grouped_conv="whole")
    g4 = grouped(model)[0]
    gone = np.asarray(report.removed[g4.input[0]])
    assert len(gone) and len(gone) % 4 == 0
    assert set(np.unique(gone // 4).tolist()) == set((gone // 4).tolist())
    assert all(set(range(4 * k, 4 * k + 4)) <= set(gone.tolist()) for k in np.unique(gone // 4))


def test_equal_mask_of_a_whole_removal_is_wrong():
    """The oracle depends on the mode: masking whole groups as positions reads other groups' weights."""
    model = zoo.resnext()
    pruned, report = assert_exact(model, ratio=0.5, grouped_conv="whole")
    feeds = random_inputs(model, 0)
    got = run(pruned, feeds)
    wrong = run(mask(model, report.removed), feeds)
    assert any(not np.allclose(got[k], wrong[k], atol=1e-3) for k in got)


def test_unknown_mode_is_a_user_error():
    with pytest.raises(UserError, match="grouped conv 'rows'"):
        build(zoo.resnext(), grouped_conv="rows")


def test_cli_grouped_conv_whole(tmp_path, cli):
    source = tmp_path / "resnext.onnx"
    onnx.save(zoo.resnext(), source)
    code, out, err = cli("prune", source, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--grouped-conv", "whole",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["grouped_conv"] == "whole"
    pruned = onnx.load(tmp_path / "p.onnx")
    assert [attr(pruned, n.name, "group") for n in grouped(zoo.resnext())] != [4, 2]
    code, _, err = cli("prune", source, "-o", tmp_path / "q.onnx", "--ratio", "0.5", "--grouped-conv", "rows")
    assert code == 2 and "--grouped-conv" in err and not (tmp_path / "q.onnx").exists()


def test_cli_groups_trace_whole(tmp_path, cli):
    source = tmp_path / "resnext.onnx"
    onnx.save(zoo.resnext(), source)
    traces = {}
    for mode in ("equal", "whole"):
        code, out, err = cli("groups", source, "--grouped-conv", mode, "--json")
        assert code == 0, err
        traces[mode] = json.loads(out)["traces"]
    assert any("2 units (" in t for t in traces["whole"])  # two units of whole groups
    assert traces["whole"] != traces["equal"]


def test_reconstruct_after_whole_groups():
    """Whole groups cost a grouped conv nothing on its kept outputs (a removed input group fed only removed
    outputs); the layers after it are refit, and no layer gets worse."""
    from edgeprune.prune.reconstruct import reconstruct

    model = zoo.resnext()
    pruned, report = assert_exact(model, ratio=0.5, grouped_conv="whole")
    samples = [random_inputs(model, seed) for seed in range(16)]
    rebuilt, layers = reconstruct(model, pruned, report.removed, samples)
    onnx.checker.check_model(rebuilt, full_check=True)
    assert layers and all(not layer.skipped for layer in layers)
    assert all(layer.error_reconstructed <= layer.error_pruned + 1e-6 for layer in layers)
    assert {layer.node for layer in layers if layer.error_pruned == 0} == {n.name for n in grouped(model)}
    assert any(layer.error_reconstructed < 0.9 * layer.error_pruned for layer in layers)
