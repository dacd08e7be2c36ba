"""`edgeprune prune` (structured) and `edgeprune groups`: the contract the issue names."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import EXAMPLE
from edgeprune.graph import load_model, totals


def test_prune_ratio_json(tmp_path, cli):
    code, out, err = cli("prune", EXAMPLE, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert {"params_before", "params_after", "macs_before", "macs_after", "groups"} <= set(d)
    assert d["groups"] == {"pruned": 4, "blocked": 2}  # the input and the logits are never pruned
    assert d["params_after"] < d["params_before"] and d["macs_after"] < d["macs_before"]
    assert totals(load_model(tmp_path / "p.onnx"))["macs"] == d["macs_after"]


def test_prune_target_macs_with_target_rounding(tmp_path, cli):
    code, out, err = cli("prune", EXAMPLE, "-o", tmp_path / "p.onnx", "--target-macs", "0.5", "--scope", "global",
                         "--target", "rpi4", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["macs_after"] <= 0.5 * d["macs_before"]
    assert all(g["kept"] % 4 == 0 for g in d["group_details"] if g["removed"])  # NEON: 4 fp32 lanes


def test_prune_needs_an_amount(tmp_path, cli):
    code, _, err = cli("prune", EXAMPLE, "-o", tmp_path / "p.onnx")
    assert code == 2 and "--ratio" in err and not (tmp_path / "p.onnx").exists()


def test_prune_pass_in_a_recipe(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{EXAMPLE}"\ntarget = "host"\noutput = "b"\n'
                      '[[passes]]\nname = "canonicalize"\n[[passes]]\nname = "prune"\nratio = 0.25\n')
    code, out, err = cli("run", recipe, "--json")
    assert code == 0, err
    passes = {p["name"]: p for p in json.loads(out)["passes"]}
    assert passes["prune"]["after"]["macs"] < passes["prune"]["before"]["macs"]


def test_groups_trace(cli):
    code, out, err = cli("groups", EXAMPLE, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["groups"] == 6 and d["blocked"] == 2
    assert any("block1.b.conv, stem.conv" in t for t in d["traces"])  # the residual ties both producers
    assert any("blocked by graph input 'input'" in t for t in d["traces"])


def test_prune_allocate_by(tmp_path, cli):
    """--allocate-by: counts from one criterion, the choice inside each group from --criterion; a data
    criterion named there needs --calib like one named by --criterion."""
    data = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "fmnist_test256.npz")
    np.savez(tmp_path / "calib.npz", input=data["input"][:32])
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "fmnist-cnn.onnx"
    args = ["prune", fixture, "-o", tmp_path / "p.onnx", "--target-macs", "0.5", "--scope", "global",
            "--criterion", "l2", "--allocate-by", "redundancy"]
    code, _, err = cli(*args)
    assert code == 2 and "'redundancy'" in err and "--calib" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.onnx").exists()
    kept = {}
    for extra in ([], ["--criterion", "redundancy"]):
        code, out, err = cli(*args, *extra, "--calib", tmp_path / "calib.npz", "--json", "--force")
        assert code == 0, err
        d = json.loads(out)
        assert d["allocate_by"] == "redundancy" and d["macs_after"] <= 0.5 * d["macs_before"]
        kept[d["criterion"]] = ([g["kept"] for g in d["group_details"]], load_model(tmp_path / "p.onnx"))
    assert kept["l2"][0] == kept["redundancy"][0]  # the same counts...
    weights = [{i.name: i.raw_data for i in m.graph.initializer} for _, m in kept.values()]
    assert weights[0] != weights[1]  # ...not the same channels
