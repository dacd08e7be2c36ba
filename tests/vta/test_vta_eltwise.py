"""Residual add and max-pool on VTA: random shapes compiled, simulated in portable mode (any race, deadlock,
bounds or portability finding raises), and compared bit for bit with the numpy integer reference."""
from __future__ import annotations

import numpy as np
import pytest

from edgeprune.backends.vta.config import VTAConfig
from edgeprune.backends.vta.eltwise import lower_add, lower_maxpool, reference_add, reference_maxpool
from edgeprune.backends.vta.isa import AluOp, Alu
from edgeprune.backends.vta.lower import simulate
from edgeprune.errors import UserError

from .test_vta_lower import SMALL


def _check(prog, expect, *xs):
    y, result = simulate(prog, *xs)
    assert result.lints == [] and y.dtype == np.int8
    np.testing.assert_array_equal(y, expect)
    assert result.counters.bytes_stored == prog.sizes()["out"]
    return result


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("config", [VTAConfig(), SMALL], ids=["default", "small"])
def test_random_residual_add(seed, config):
    rng = np.random.default_rng(seed)
    shape = (1, int(rng.integers(1, 50)), *map(int, rng.integers(1, 14, 2))) if seed % 3 else (1, int(rng.integers(1, 90)))
    a, b = (rng.integers(-128, 128, shape).astype(np.int8) for _ in range(2))
    sa, sb = (int(v) for v in rng.integers(0, 4, 2))
    stages = [(int(rng.integers(0, 5)), bool(rng.integers(2)))] + [(int(rng.integers(-2, 3)), False)] * (seed % 2)
    prog = lower_add(shape, sa, sb, stages, config)
    result = _check(prog, reference_add(a, b, sa, sb, stages), a, b)
    assert result.counters.insns["ALU"] >= 3 and any(isinstance(i, Alu) and i.alu_op == AluOp.ADD and not i.use_imm
                                                     for i in prog.insns)


def test_add_rounds_half_to_even_and_saturates():
    a = np.array([[3, 5, -3, 127, -128, 1, -5, 7]], np.int8)
    b = np.array([[0, 0, 0, 127, -128, 0, 0, 0]], np.int8)
    prog = lower_add(a.shape, 0, 0, [(1, False)])
    y, _ = simulate(prog, a, b)
    np.testing.assert_array_equal(y, [[2, 2, -2, 127, -128, 0, -2, 4]])  # as onnxruntime's QuantizeLinear


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("config", [VTAConfig(), SMALL], ids=["default", "small"])
def test_random_maxpool(seed, config):
    rng = np.random.default_rng(100 + seed)
    k = int(rng.choice([1, 2, 3, 5]))
    stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, k))
    shape = (1, int(rng.integers(1, 40)), *(int(v) for v in rng.integers(k, k + 12, 2)))
    x = rng.integers(-128, 128, shape).astype(np.int8)  # negative inputs: padding must never win a max
    stages = [(int(rng.integers(0, 2)), bool(rng.integers(2)))]
    prog = lower_maxpool(shape, (k, k), stride, pad, stages, config)
    _check(prog, reference_maxpool(x, (k, k), stride, pad, stages), x)


def test_maxpool_several_tiles_double_buffered():
    x = np.random.default_rng(1).integers(-128, 128, (1, 48, 20, 20)).astype(np.int8)
    prog = lower_maxpool(x.shape, (3, 3), 2, 1, config=SMALL)
    assert prog.tiling.tiles >= 4
    _check(prog, reference_maxpool(x, (3, 3), 2, 1), x)


def test_padding_never_wins():
    x = np.full((1, 16, 2, 2), -100, np.int8)
    y, _ = simulate(lower_maxpool(x.shape, (3, 3), 1, 1), x)
    assert (y == -100).all()


def test_bad_shapes_say_so():
    with pytest.raises(UserError, match="padding"):
        lower_maxpool((1, 16, 8, 8), (2, 2), 2, 2)
    with pytest.raises(UserError, match="shifts left at most"):
        lower_add((1, 16), 20, 0, [(0, False)])
    with pytest.raises(UserError, match="batch-1"):
        lower_add((2, 16, 4, 4), 0, 0, [(0, False)])
