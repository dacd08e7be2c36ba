"""The VTA configuration: VTA.md's default, and errors that name the key at fault."""
from __future__ import annotations

import dataclasses

import pytest

from edgeprune.backends.vta.config import VTAConfig
from edgeprune.errors import UserError


def test_default_is_the_board_configuration():
    c = VTAConfig()
    assert (c.batch, c.block_in, c.block_out) == (1, 16, 16)
    assert c.elem_bytes == {"uop": 4, "inp": 16, "wgt": 256, "acc": 64, "out": 16}
    assert c.depth == {"uop": 8192, "inp": 2048, "wgt": 1024, "acc": 2048, "out": 2048}
    assert c.bitstream == "1x16_i8w8a32_15_15_18_17"


def test_from_dict_takes_upstream_keys_and_derives_the_rest():
    c = VTAConfig.from_dict({"log_block": 3, "log_acc_buff_size": 14, "log_batch": 1, "log_wgt_buff_size": 16})
    assert (c.batch, c.block_in, c.block_out) == (2, 8, 8)
    assert c.elem_bytes["acc"] == 2 * 8 * 4 and c.depth["acc"] == (1 << 14) // 64
    assert c.elem_bytes["wgt"] == 64 and c.depth["wgt"] == 1024 and c.depth["out"] == c.depth["acc"]
    assert c.bitstream == "2x8_i8w8a32_15_15_16_14"


def test_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        VTAConfig().log_block = 5  # type: ignore[misc]


@pytest.mark.parametrize("table, names", [
    ({"log_blok": 4}, "pynq.toml [vta].log_blok: unknown key"),
    ({"log_block": "4"}, "pynq.toml [vta].log_block = '4'"),
    ({"log_block": True}, "pynq.toml [vta].log_block = True"),
    ({"log_inp_width": 2}, "pynq.toml [vta].log_inp_width = 2"),
    # 2^19 B of 256 B weight blocks is 2048 blocks: the 10-bit weight index cannot reach them.
    ({"log_wgt_buff_size": 19}, "pynq.toml [vta].log_wgt_buff_size = 19 gives 2048 wgt elements"),
    ({"log_acc_buff_size": 5}, "pynq.toml [vta].log_acc_buff_size = 5 gives 0 acc elements"),
])
def test_bad_tables_name_the_key(table, names):
    with pytest.raises(UserError) as e:
        VTAConfig.from_dict(table, where="pynq.toml [vta]")
    assert str(e.value).startswith(names)


@pytest.mark.parametrize("name, clock, fetch", [("pynq-z1", 100, 0x43C00000), ("ultra96", 333, 0xA0000000),
                                                ("de10-nano", 100, 0xFF220000)])
def test_board_targets(name, clock, fetch):
    from edgeprune.backends.vta.config import Board
    from edgeprune.targets import load_target

    target = load_target(name)
    board = Board.from_target(target)
    assert target.kind == "vta" and board.config == VTAConfig() and board.clock_mhz == clock
    assert board.registers["fetch"] == fetch
    assert [board.registers[m] - fetch for m in ("load", "compute", "store")] == [0x1000, 0x2000, 0x3000]


def test_board_errors_name_the_file_and_key():
    from edgeprune.backends.vta.config import Board
    from edgeprune.targets import builtin_dir, parse_target

    text = (builtin_dir() / "pynq-z1.toml").read_text()
    with pytest.raises(UserError, match=r"my.toml: \[vta\].store_addr: missing"):
        Board.from_target(parse_target(text.replace("store_addr", "#"), "my.toml", "my.toml"))
    with pytest.raises(UserError, match=r"my.toml: \[vta\].log_inp_width = 4: edgeprune supports only 3"):
        Board.from_target(parse_target(text.replace("log_inp_width = 3", "log_inp_width = 4"), "my.toml", "my.toml"))
    with pytest.raises(UserError, match=r"bitstream = '1x16_x' but the log sizes give '1x16_i8w8a32_15_15_18_17'"):
        Board.from_target(parse_target(text + 'bitstream = "1x16_x"\n', "my.toml", "my.toml"))
    with pytest.raises(UserError, match=r"my.toml: key 'vta.clock_mhz' must be of type int"):
        parse_target(text.replace("clock_mhz = 100", 'clock_mhz = "fast"'), "my.toml", "my.toml")
