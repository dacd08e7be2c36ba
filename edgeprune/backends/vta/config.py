"""The VTA hardware configuration: what the bitstream was built with, read from a target's `[vta]` table.

Fields are the log2 keys of upstream's `vta_config.json` (lower case), so a board's configuration can
be copied across; everything else (block sizes, element bytes, buffer depths) is derived from them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from edgeprune.errors import UserError

# Widest buffer the instruction set can address (micro-op and GEMM/ALU index fields, VTA.md).
_ISA_MAX_DEPTH = {"uop": 1 << 13, "inp": 1 << 11, "wgt": 1 << 10, "acc": 1 << 11}
# Our simulator and lowering handle int8 data with int32 accumulators only.
_SUPPORTED_WIDTHS = {"log_inp_width": 3, "log_wgt_width": 3, "log_acc_width": 5}


@dataclass(frozen=True)
class VTAConfig:
    """Default: 1x16x16 int8/int32, the configuration every board sample uses."""

    log_inp_width: int = 3
    log_wgt_width: int = 3
    log_acc_width: int = 5
    log_batch: int = 0
    log_block: int = 4
    log_uop_buff_size: int = 15
    log_inp_buff_size: int = 15
    log_wgt_buff_size: int = 18
    log_acc_buff_size: int = 17

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or not 0 <= value < 32:
                raise UserError(f"[vta].{f.name} = {value!r}: expected an integer log2 value in 0..31")
        for key, width in _SUPPORTED_WIDTHS.items():
            if getattr(self, key) != width:
                raise UserError(f"[vta].{key} = {getattr(self, key)}: edgeprune supports only {width} "
                                f"(int8 data, int32 accumulators)")
        for buf, limit in _ISA_MAX_DEPTH.items():
            if self.depth[buf] > limit or self.depth[buf] < 1:
                raise UserError(f"[vta].log_{buf}_buff_size = {getattr(self, f'log_{buf}_buff_size')} gives "
                                f"{self.depth[buf]} {buf} elements of {self.elem_bytes[buf]} B; the instruction "
                                f"set addresses 1..{limit}")

    @classmethod
    def from_dict(cls, table: Mapping[str, object], where: str = "[vta]") -> VTAConfig:
        """Build from a TOML table; `where` prefixes errors so they name the file and table."""
        known = {f.name for f in fields(cls)}
        for key in table:
            if key not in known:
                raise UserError(f"{where}.{key}: unknown key; known keys: {', '.join(sorted(known))}")
        try:
            return cls(**table)  # type: ignore[arg-type]
        except UserError as e:
            raise UserError(str(e).replace("[vta]", where, 1)) from None

    @property
    def batch(self) -> int:
        return 1 << self.log_batch

    @property
    def block_in(self) -> int:
        return 1 << self.log_block

    @property
    def block_out(self) -> int:
        return 1 << self.log_block

    @property
    def elem_bytes(self) -> dict[str, int]:
        """Bytes of one element of each buffer: DRAM fields of LOAD/STORE count in these units."""
        return {
            "uop": 4,
            "inp": self.batch * self.block_in << self.log_inp_width >> 3,
            "wgt": self.block_out * self.block_in << self.log_wgt_width >> 3,
            "acc": self.batch * self.block_out << self.log_acc_width >> 3,
            "out": self.batch * self.block_out << self.log_inp_width >> 3,  # outputs feed the next layer
        }

    @property
    def depth(self) -> dict[str, int]:
        """Elements each on-chip buffer holds; the output buffer has one row per accumulator row."""
        size = {"uop": self.log_uop_buff_size, "inp": self.log_inp_buff_size,
                "wgt": self.log_wgt_buff_size, "acc": self.log_acc_buff_size}
        depth = {buf: (1 << log) // self.elem_bytes[buf] for buf, log in size.items()}
        depth["out"] = depth["acc"]
        return depth

    @property
    def bitstream(self) -> str:
        """Upstream's bitstream name for this configuration, e.g. 1x16_i8w8a32_15_15_18_17."""
        return (f"{self.batch}x{self.block_in}_i{1 << self.log_inp_width}w{1 << self.log_wgt_width}"
                f"a{1 << self.log_acc_width}_{self.log_uop_buff_size}_{self.log_inp_buff_size}"
                f"_{self.log_wgt_buff_size}_{self.log_acc_buff_size}")


REGISTER_BLOCKS = ("fetch", "load", "compute", "store")


@dataclass(frozen=True)
class Board:
    """A target's accelerator: the bitstream's configuration, its clock, and where its four modules' registers are."""

    config: VTAConfig
    clock_mhz: int
    registers: dict[str, int]

    @classmethod
    def from_target(cls, target) -> Board:
        """From the `[vta]` table of a kind "vta" target; errors name the target file and the key."""
        table = dict(target.raw.get("vta", {}))
        where = f"{target.path or target.name}: [vta]"
        missing = [k for k in ("clock_mhz", *(f"{m}_addr" for m in REGISTER_BLOCKS)) if k not in table]
        if missing:
            raise UserError(f"{where}.{missing[0]}: missing (a VTA target names its clock and the register blocks "
                            f"{', '.join(REGISTER_BLOCKS)})")
        clock = table.pop("clock_mhz")
        if clock <= 0:
            raise UserError(f"{where}.clock_mhz = {clock}: must be positive")
        registers = {m: table.pop(f"{m}_addr") for m in REGISTER_BLOCKS}
        named = table.pop("bitstream", None)
        config = VTAConfig.from_dict(table, where)
        if named is not None and named != config.bitstream:
            raise UserError(f"{where}.bitstream = {named!r} but the log sizes give {config.bitstream!r}")
        return cls(config, clock, registers)
