"""The dependency graph itself: groups, their trace, and protection."""
import zoo
from edgeprune.prune.depgraph import build, format_group


def test_trace_names_producers_consumers_and_reasons():
    model = zoo.resnet_basic(projection=False)
    groups = build(model).groups
    residual = max((g for g in groups if not g.blocked), key=lambda g: len(g.producers))
    text = format_group(residual)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert text.startswith(f"group {residual.id}: 16 channels, prunable")
    assert f"producers: {', '.join(sorted([convs[0], convs[2], convs[4]]))}" in text
    assert "gemm" in text.split("consumers:")[1].splitlines()[0]
    assert "tensors:" in text and "[0:16]" in text
    output = next(g for g in groups if g.blocked and "graph output" in g.blocked[0])
    assert "blocked by graph output" in format_group(output)


def test_grouped_conv_trace_counts_units():
    groups = build(zoo.resnext()).groups
    assert any(format_group(g).startswith(f"group {g.id}: 4 units (16 channels)") for g in groups)


def test_every_channel_is_in_exactly_one_group():
    for make in zoo.ZOO.values():
        dg = build(make())
        seen = {}
        for g in dg.groups:
            for atom in g.atoms:
                for tensor, idx in atom.items():
                    seen.setdefault(tensor, []).extend(idx.tolist())
        for tensor, space in dg.spaces.items():
            assert sorted(seen[tensor]) == list(range(space.size)), tensor


def test_protect_blocks_the_layers_groups():
    model = zoo.chain()
    conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    groups = build(model, protect=[conv]).groups
    assert all(g.blocked for g in groups if conv in g.producers or conv in g.consumers)
    assert any("protected" in r for g in groups for r in g.blocked)
