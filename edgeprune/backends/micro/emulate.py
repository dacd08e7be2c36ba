"""Build a firmware project with arm-none-eabi-gcc and run it under qemu-system-arm: outputs, sizes, counts."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.backends.micro.project import QEMU_MACHINES
from edgeprune.errors import PassError, UserError
from edgeprune.targets import Target

TIMEOUT = 300.0  # seconds of host time for one emulated run
# Symbols of the example's check data: flash the application needs, not the model; left out of flash_bytes.
CHECK_SYMBOLS = re.compile(r"^(in|ref)\d+_\d+$")


@dataclass
class Firmware:
    elf: Path
    flash_bytes: int  # everything in flash but the sample data of the check
    ram_bytes: int  # .data + .bss + stack
    sections: dict[str, int]
    check_bytes: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class Run:
    outputs: list[list[np.ndarray]]  # per sample, per output
    ticks: list[int]
    layers: list[tuple[str, int]]  # name, ticks summed over samples
    instructions_per_tick: float


def tools(target: Target) -> list[str]:
    cc = target.toolchain.get("cc", "arm-none-eabi-gcc")
    return [cc, cc.replace("gcc", "size"), cc.replace("gcc", "nm"), "make", target.device.get("emulator", "qemu-system-arm")]


def check_tools(target: Target) -> None:
    for tool in tools(target):
        if shutil.which(tool) is None:
            raise UserError(f"target {target.name}: '{tool}' is missing (apt-get install "
                            f"{' '.join(target.toolchain.get('apt', []))} make)")


def build(project: Path, work: Path, target: Target, layers: bool = False, replace: dict[str, str] | None = None,
          defines: tuple[str, ...] = ()) -> Firmware:
    """`make` a copy of the project in `work` (with `replace`d files, and -D`defines`); sizes from the linked ELF."""
    shutil.copytree(project, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("manifest.json", "*.onnx", "*.tflite"))
    for rel, text in (replace or {}).items():
        (work / rel).write_text(text)
    flags = [f"-D{d}" for d in (*defines, *(["EP_PROFILE_LAYERS"] if layers else []))]
    extra = [f"EXTRA_CFLAGS={' '.join(flags)}"] if flags else []
    proc = subprocess.run(["make", "-s", "-C", str(work), *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.splitlines() if "error" in l or "overflow" in l] or proc.stderr.splitlines()[-3:]
        raise PassError(f"firmware build failed: {' | '.join(lines[:3])}")
    elf = work / "build" / "firmware.elf"
    cc = target.toolchain.get("cc", "arm-none-eabi-gcc")
    out = subprocess.run([cc.replace("gcc", "size"), "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sections = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\.\S+)\s+(\d+)\s+\d+", out, re.M)}
    symbols = subprocess.run([cc.replace("gcc", "nm"), "-S", str(elf)], capture_output=True, text=True, check=True).stdout
    check = sum(int(size, 16) for _, size, _, name in (l.split() for l in symbols.splitlines() if len(l.split()) == 4)
                if CHECK_SYMBOLS.match(name))
    flash = sum(sections.get(s, 0) for s in (".isr_vector", ".text", ".ARM.exidx", ".data")) - check
    ram = sum(sections.get(s, 0) for s in (".data", ".bss", ".stack"))
    warnings = [l for l in proc.stderr.splitlines() if "warning:" in l]
    return Firmware(elf, flash, ram, sections, check, warnings)


def serve(fw: Firmware, target: Target, port: int) -> subprocess.Popen:
    """QEMU running an EP_SERIAL firmware, its UART0 a TCP server on 127.0.0.1:`port` (it waits for the client)."""
    cmd = [target.device.get("emulator", "qemu-system-arm"), "-machine", target.device["qemu_machine"], "-cpu",
           target.device["qemu_cpu"], "-nographic", "-monitor", "none", "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on",
           "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(fw.elf)]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(fw: Firmware, target: Target, output_specs: list[dict]) -> Run:
    """Run under QEMU; the semihosting text goes to a file (QEMU's stdio console drops the tail at exit)."""
    machine = target.device["qemu_machine"]
    log = fw.elf.with_suffix(".log")
    cmd = [target.device.get("emulator", "qemu-system-arm"), "-machine", machine, "-cpu", target.device["qemu_cpu"],
           "-nographic", "-monitor", "none", "-serial", "none", "-chardev", f"file,id=semihost,path={log}",
           "-semihosting-config", "enable=on,target=native,chardev=semihost", "-icount", "shift=0", "-kernel", str(fw.elf)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise PassError(f"firmware did not finish within {TIMEOUT:.0f} s under {machine}") from None
    text = log.read_text() if log.is_file() else ""
    if "FAULT" in text or "rc " not in text:
        raise PassError(f"firmware failed under {machine} (exit {proc.returncode}): "
                        f"{(text.strip().splitlines() or [proc.stderr.strip()])[-1][:200]}")
    outputs: dict[int, list] = {}
    for s, k, data in re.findall(r"^out (\d+) (\d+) ([0-9a-f]*)$", text, re.M):
        spec = output_specs[int(k)]
        value = np.frombuffer(bytes.fromhex(data), dtype=spec["dtype"]).reshape(spec["shape"])
        outputs.setdefault(int(s), []).append(value)
    runs = re.findall(r"^run (\d+) rc (\d+) ticks (\d+)$", text, re.M)
    failed = [r for r in runs if r[1] != "0"]
    if failed:
        raise PassError(f"ep_model_run returned {failed[0][1]} (layer {int(failed[0][1]) - 1} failed) under {machine}")
    layers = [(name, int(t)) for _, name, t in re.findall(r"^layer (\d+) (\S+) ticks (\d+)$", text, re.M)]
    return Run([outputs[s] for s in sorted(outputs)], [int(r[2]) for r in runs], layers,
               1e9 / QEMU_MACHINES[machine]["clock_hz"])


def build_and_run(project: Path, target: Target, output_specs: list[dict], layers: bool = False,
                  replace: dict[str, str] | None = None) -> tuple[Firmware, Run]:
    with tempfile.TemporaryDirectory(prefix="edgeprune-fw-") as tmp:
        fw = build(project, Path(tmp), target, layers, replace)
        return fw, run(fw, target, output_specs)
