"""The oracle has teeth: masking other channels than the removed ones is caught."""
import numpy as np

import zoo
from edgeprune.graph.runtime import random_inputs, run
from edgeprune.prune.pruner import mask, prune


def test_wrong_indices_change_the_output():
    model = zoo.densenet()
    pruned, report = prune(model, ratio=0.5)
    shifted = {t: sorted(i ^ 1 for i in ix) for t, ix in report.removed.items()}  # every space has an even size
    assert shifted != report.removed
    feeds = random_inputs(model)
    got, right, wrong = run(pruned, feeds), run(mask(model, report.removed), feeds), run(mask(model, shifted), feeds)
    name = next(iter(got))
    assert np.allclose(got[name], right[name], rtol=1e-4, atol=1e-5)
    assert not np.allclose(got[name], wrong[name], rtol=1e-4, atol=1e-5)


def test_apply_removal_refuses_partial_atoms_and_blocked_channels():
    import pytest

    from edgeprune.errors import UserError
    from edgeprune.prune.pruner import apply_removal

    model = zoo.resnet_basic(projection=False)
    _, report = prune(model, ratio=0.5)
    assert apply_removal(model, report.removed) is not None
    first = next(iter(report.removed))
    partial = dict(report.removed)
    partial[first] = partial[first][1:]
    with pytest.raises(UserError, match="tied to removed channels"):
        apply_removal(model, partial)
    head = next(n for n in model.graph.node if n.op_type == "Gemm").output[0]
    with pytest.raises(UserError, match="graph output"):
        apply_removal(model, {head: [0]})
    with pytest.raises(UserError, match="out of range"):
        apply_removal(model, {first: [999]})
