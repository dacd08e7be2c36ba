"""Devices as TOML files: adding a board is adding a file, not code.

A target file is checked against SCHEMA before use; a wrong key or type gets a one-line error that
names the file and the key. Built-in targets live in the top-level `targets/` folder (shipped in
the wheel as `edgeprune.target_files`); any other path to a `.toml` file works the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgeprune.errors import UserError
from edgeprune.tomlcheck import check_table, read_toml

KINDS = ("host", "arm-linux", "micro", "vta")
PROFILE_METHODS = ("local", "rpc", "emulator", "serial", "simulator")

# Checked by edgeprune.tomlcheck: key -> (type, required, allowed values or None); nested tables alike.
SCHEMA: dict[str, Any] = {
    "name": (str, True, None),
    "description": (str, True, None),
    "kind": (str, True, KINDS),
    "tvm": {
        "kind": (str, True, ("llvm", "c")),
        "mtriple": (str, False, None),
        "mcpu": (str, False, None),
        "mattr": (list[str], False, None),
        "mfloat-abi": (str, False, ("hard", "soft", "softfp")),
        "num-cores": (int, False, None),
    },
    "toolchain": {
        "cxx": (str, False, None),
        "cc": (str, False, None),  # C compiler of microcontroller firmware
        "cflags": (list[str], False, None),  # its CPU flags (-mcpu, -mfpu, -mfloat-abi)
        "apt": (list[str], False, None),
    },
    "memory": {  # microcontrollers (the micro back end requires the first four): budgets and where they sit
        "flash_bytes": (int, False, None),
        "ram_bytes": (int, False, None),
        "flash_origin": (str, False, None),
        "ram_origin": (str, False, None),
        "stack_bytes": (int, False, None),
        "coded_weights": (bool, False, None),  # int8 weights Huffman-coded in flash, decoded per layer into RAM
    },
    "device": {
        "cores": (int, True, None),
        "vector_bits": (int, True, None),
        "profile": (str, True, PROFILE_METHODS),
        "rpc_key": (str, False, None),
        "emulator": (str, False, None),
        "python_runtime": (str, False, None),
        "qemu_machine": (str, False, None),  # the emulated board with this core (qemu-system-arm -machine)
        "qemu_cpu": (str, False, None),
        "clock_hz": (int, False, None),  # core clock: converts ticks to time and emulator ticks to instructions
        "dsp": (bool, False, None),  # Armv7E-M DSP extension (SMLAD dual 16-bit MACs): Cortex-M4/M7/M33, not M0+/M3
    },
    # VTA accelerators: the bitstream's configuration (log2 keys of upstream's vta_config.json), its clock and
    # the AXI-Lite addresses of its four modules; edgeprune.backends.vta.config.Board checks what kind "vta" needs.
    "vta": {
        **{f"log_{k}": (int, False, None) for k in ("inp_width", "wgt_width", "acc_width", "batch", "block",
                                                   "uop_buff_size", "inp_buff_size", "wgt_buff_size",
                                                   "acc_buff_size")},
        "clock_mhz": (int, False, None),
        **{f"{m}_addr": (int, False, None) for m in ("fetch", "load", "compute", "store")},
        "bitstream": (str, False, None),
    },
}


@dataclass(frozen=True)
class Target:
    """A checked target file; `tvm_target()` turns it into TVM's own object."""

    name: str
    description: str
    kind: str
    tvm: dict[str, Any]
    toolchain: dict[str, Any]
    device: dict[str, Any]
    path: str
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)

    @property
    def is_host(self) -> bool:
        return self.kind == "host"

    @property
    def vector_bits(self) -> int:
        """SIMD width the schedules tile for; `device.vector_bits = 0` means this machine's, detected."""
        bits = int(self.device["vector_bits"])
        return bits or host_vector_bits()

    @property
    def channel_multiple(self) -> int:
        """Channel counts that fill the hardware: VTA's GEMM block, else the fp32 lanes of the CPU's vectors."""
        if self.kind == "vta" and "log_block" in self.raw.get("vta", {}):
            return 1 << int(self.raw["vta"]["log_block"])
        return max(1, self.vector_bits // 32)

    def tvm_target_dict(self) -> dict[str, Any]:
        """The TVM target as a dict; `mcpu = "native"` becomes this machine's LLVM CPU name."""
        spec = dict(self.tvm)
        if spec.get("mcpu") == "native":
            from tvm.target import codegen

            spec["mcpu"] = codegen.llvm_get_system_cpu()
        return spec

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.tvm_target_dict())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "kind": self.kind, "tvm": self.tvm,
                "toolchain": self.toolchain, "device": self.device, **({"memory": self.memory} if self.memory else {})}


def host_vector_bits() -> int:
    """AVX-512 512, AVX2 256, otherwise (SSE, NEON) 128, read from /proc/cpuinfo's flags."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return 128
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    return 512 if "avx512f" in flags else 256 if "avx2" in flags else 128


def builtin_dir() -> Path:
    """The installed copy; from a source checkout on sys.path, the checkout's own folder."""
    try:
        return Path(str(resources.files("edgeprune.target_files")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "targets"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.toml"))


def parse_target(text: str, label: str, path: str = "") -> Target:
    data = read_toml(Path(label), text)
    check_table(data, SCHEMA, label)
    return Target(name=data["name"], description=data["description"], kind=data["kind"], tvm=data["tvm"],
                  toolchain=data.get("toolchain", {}), device=data["device"], path=path, raw=data,
                  memory=data.get("memory", {}))


def load_target(name_or_path: str | Path) -> Target:
    """A built-in target by name (`rpi4`) or a user's own file by path."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or path.parent != Path("."):
        if not path.is_file():
            raise UserError(f"--target {text}: no such target file")
        return parse_target(path.read_text(), str(path), str(path))
    builtin = builtin_dir() / f"{text}.toml"
    if not builtin.is_file():
        raise UserError(f"--target {text}: unknown target (built-in: {', '.join(builtin_names())}; "
                        "or give a path to a .toml file)")
    return parse_target(builtin.read_text(), f"targets/{text}.toml", f"targets/{text}.toml")


def all_targets() -> list[Target]:
    return [load_target(name) for name in builtin_names()]
