"""Shared by the cycle tests: the zoo of tests/prune on the path, torch on one thread, the fixtures."""
from __future__ import annotations

import sys
from pathlib import Path

import onnx

TESTS = Path(__file__).resolve().parents[1]
FIXTURES = TESTS / "fixtures"
sys.path.insert(0, str(TESTS / "prune"))

try:
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass


def fixture(name: str) -> onnx.ModelProto:
    from edgeprune.graph import canonicalize, load_model

    return canonicalize(load_model(FIXTURES / f"{name}.onnx"))
