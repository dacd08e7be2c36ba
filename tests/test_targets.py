"""Target files: every built-in one checks, errors name the key, users can bring their own."""
from __future__ import annotations

import pytest

from conftest import REPO
from edgeprune.errors import UserError
from edgeprune.targets import all_targets, load_target, parse_target

REQUIRED = {"host", "rpi3", "rpi4", "rpi5", "rpi-armv7"}


def test_builtin_targets_load_and_make_tvm_targets():
    targets = {t.name: t for t in all_targets()}
    assert REQUIRED <= set(targets)
    for t in targets.values():
        tvm_target = t.tvm_target()
        assert tvm_target.kind.name == t.tvm["kind"]
    assert targets["rpi4"].tvm_target().attrs["mtriple"] == "aarch64-linux-gnu"
    assert targets["rpi-armv7"].tvm_target_dict()["mfloat-abi"] == "hard"
    assert targets["host"].tvm_target_dict()["mcpu"] != "native"


def test_file_name_matches_target_name():
    for path in (REPO / "targets").glob("*.toml"):
        assert load_target(path).name == path.stem


@pytest.mark.parametrize("edit, key", [
    (lambda s: s.replace('kind = "arm-linux"', 'kind = "toaster"'), "kind"),
    (lambda s: s.replace("[device]", "[device]\nclock_mhz = 1500"), "device.clock_mhz"),
    (lambda s: s.replace('mattr = ["+neon"]', 'mattr = "+neon"'), "tvm.mattr"),
    (lambda s: s.replace('name = "rpi4"\n', ""), "name"),
    (lambda s: s + "\n[flash]\nkb = 3\n", "flash"),
    (lambda s: s.replace("vector_bits = 128\n", ""), "device.vector_bits"),
])
def test_schema_errors_name_the_key(edit, key):
    text = edit((REPO / "targets" / "rpi4.toml").read_text())
    with pytest.raises(UserError, match=f"'{key}'"):
        parse_target(text, "board.toml")


def test_user_target_file(tmp_path):
    mine = tmp_path / "my-pi.toml"
    mine.write_text((REPO / "targets" / "rpi4.toml").read_text().replace('name = "rpi4"', 'name = "my-pi"'))
    assert load_target(mine).name == "my-pi"
    with pytest.raises(UserError, match="no such target file"):
        load_target(tmp_path / "absent.toml")
    with pytest.raises(UserError, match="unknown target"):
        load_target("pi4")


def test_channel_multiple_is_the_vta_block_or_the_cpu_fp32_lanes():
    """`prune --target` rounds channel counts to it: 16 for VTA's GEMM block, 4 for a 128-bit NEON CPU."""
    from edgeprune.context import Context
    from edgeprune.passes.channel_prune import default_round_to

    assert load_target("pynq-z1").channel_multiple == 16
    assert load_target("rpi4").channel_multiple == 4
    ctx = Context()
    assert default_round_to(ctx) == 1
    ctx.target = load_target("pynq-z1")
    assert default_round_to(ctx) == 16
