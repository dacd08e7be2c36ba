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
