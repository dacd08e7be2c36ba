"""Every zoo model, random ratios, scopes, criteria, rounding and grouped-conv modes: pruned == masked, always."""
import numpy as np
import pytest

import zoo
from oracle import assert_exact


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_random_settings(name, seed):
    rng = np.random.default_rng(seed + 100 * sorted(zoo.ZOO).index(name))
    options = dict(ratio=float(rng.uniform(0.05, 0.9)), scope=str(rng.choice(["local", "global"])),
                   criterion=str(rng.choice(["l1", "l2"])), round_to=int(rng.choice([1, 1, 2, 4])),
                   min_channels=int(rng.integers(1, 3)), grouped_conv=str(rng.choice(["equal", "whole"])))
    pruned, report = assert_exact(zoo.ZOO[name](), **options)
    assert report.params_after <= report.params_before
    assert report.macs_after <= report.macs_before
    for group in report.groups:
        assert group.kept >= min(group.channels, options["min_channels"])
        if group.kept < group.channels:
            assert group.kept % options["round_to"] == 0 or group.kept == options["min_channels"]
