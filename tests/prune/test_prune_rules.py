"""The rule table covers the ops the design names, and the report adds up."""
import json

import zoo
from edgeprune.prune.pruner import prune
from edgeprune.prune.rules import RULES

DESIGN_OPS = """Conv ConvTranspose BatchNormalization Relu LeakyRelu Sigmoid HardSigmoid HardSwish Clip Tanh Erf Exp
Sqrt Neg Identity Dropout Add Sub Mul Div Concat Split Slice MaxPool AveragePool GlobalAveragePool GlobalMaxPool Pad
Resize Upsample Gemm MatMul Flatten Reshape ReduceMean PRelu""".split()


def test_every_named_op_has_a_rule():
    assert sorted(set(DESIGN_OPS) - set(RULES)) == []


def test_ops_that_mix_channels_have_none():
    """Transpose, LayerNormalization and GroupNormalization have rules that block only when channels mix."""
    assert not {"Softmax", "LRN", "DepthToSpace"} & set(RULES)


def test_report_adds_up():
    _, report = prune(zoo.inception(), ratio=0.5)
    data = report.as_dict()
    json.dumps(data)
    assert all(g["kept"] + g["removed"] == g["channels"] for g in data["groups"])
    assert data["groups_pruned"] == sum(1 for g in data["groups"] if g["removed"])
    assert data["groups_blocked"] == sum(1 for g in data["groups"] if g["blocked"])
