"""`edgeprune profile FW/ --serial PORT`: run the bundle's model on a board over a UART and check it.

The board runs the example firmware built with `make EXTRA_CFLAGS=-DEP_SERIAL` (app/ep_serial.c, whose
header comment and the project README give the protocol): framed requests with a length and a CRC-32,
replies with the outputs and the DWT cycle count (SysTick ticks where the core has no DWT counter,
as under QEMU). Every read has a deadline: a silent or foreign board is a one-line error, never a hang.
"""
from __future__ import annotations

import struct
import time
import zlib
from typing import Any

import numpy as np

from edgeprune.backends.micro import check_outputs
from edgeprune.compile.source import load_source
from edgeprune.errors import UserError

VERSION = 1
BAUD = 115200
HEADER = struct.Struct("<2sBBI")  # magic, type, status, payload length
MAGIC = b"EP"
ERRORS = {1: "bad CRC", 2: "bad length", 3: "unknown request"}
# What the board's tick count is (the info reply's counter field), for the report.
COUNTERS = {0: ("dwt", "core cycles from the DWT cycle counter"),
            1: ("systick", "core clock ticks from SysTick (the core has no DWT cycle counter)"),
            2: ("qemu-icount", "QEMU virtual clock ticks (DWT is not modelled): under -icount shift=0, "
                               "ticks x 1e9 / clock = instructions")}


def frame(kind: str, payload: bytes = b"", status: int = 0) -> bytes:
    body = struct.pack("<BBI", ord(kind), status, len(payload)) + payload
    return MAGIC + body + struct.pack("<I", zlib.crc32(body))


class Link:
    """One serial port (a device path or any pyserial URL, e.g. socket://127.0.0.1:4321)."""

    def __init__(self, port: str, baud: int, timeout: float):
        try:
            import serial
        except ImportError:
            raise UserError("--serial needs pyserial: pip install 'edgeprune[serial]'") from None
        self.port, self.timeout = port, timeout
        try:
            self.conn = serial.serial_for_url(port, baudrate=baud, timeout=timeout, write_timeout=timeout)
        except (serial.SerialException, ValueError) as e:
            raise UserError(f"--serial {port}: cannot open it ({e})") from None
        self.errors = (serial.SerialException,)

    def close(self) -> None:
        self.conn.close()

    def _read(self, n: int, deadline: float, waiting_for: str) -> bytes:
        data = b""
        while len(data) < n:
            if time.monotonic() > deadline:
                raise UserError(f"--serial {self.port}: no complete {waiting_for} within {self.timeout:g} s (is the board "
                                f"running the firmware built with `make EXTRA_CFLAGS=-DEP_SERIAL`, at this baud rate?)")
            try:
                data += self.conn.read(n - len(data))
            except self.errors as e:
                raise UserError(f"--serial {self.port}: {e}") from None
        return data

    def request(self, kind: str, payload: bytes = b"") -> bytes:
        """Send one request, return the payload of its reply (text the board printed before it is skipped)."""
        try:
            self.conn.write(frame(kind, payload))
            self.conn.flush()
        except self.errors as e:
            raise UserError(f"--serial {self.port}: {e}") from None
        deadline = time.monotonic() + self.timeout
        window = b""
        while window != MAGIC:  # hunt for the start of the reply
            window = (window + self._read(1, deadline, "reply"))[-2:]
        head = MAGIC + self._read(HEADER.size - 2, deadline, "reply")
        _, got, status, length = HEADER.unpack(head)
        body = self._read(length + 4, deadline, "reply")
        if zlib.crc32(head[2:] + body[:-4]) != struct.unpack("<I", body[-4:])[0]:
            raise UserError(f"--serial {self.port}: the reply's CRC does not match (a noisy line or a wrong baud rate)")
        if chr(got) == "e":
            raise UserError(f"--serial {self.port}: the board refused the request: {ERRORS.get(status, f'error {status}')}")
        if chr(got) != kind.lower():
            raise UserError(f"--serial {self.port}: expected a '{kind.lower()}' reply, got '{chr(got)}'")
        return body[:-4]


def read_info(link: Link, manifest: dict[str, Any]) -> dict[str, Any]:
    """The board's counter and clock; refuses a board whose model has other input or output sizes."""
    raw = link.request("I")
    version, counter, clock, n_in, n_out = struct.unpack_from("<5I", raw)
    if version != VERSION:
        raise UserError(f"--serial {link.port}: the board speaks protocol {version}, this edgeprune {VERSION}")
    sizes = list(struct.unpack_from(f"<{n_in + n_out}I", raw, 20))
    expected = [int(np.prod(s["shape"])) * np.dtype(s["dtype"]).itemsize for s in [*manifest["inputs"], *manifest["outputs"]]]
    if [n_in, n_out, *sizes] != [len(manifest["inputs"]), len(manifest["outputs"]), *expected]:
        raise UserError(f"--serial {link.port}: the board runs another model (input/output bytes {sizes[:n_in]}/"
                        f"{sizes[n_in:]}, the bundle's {expected[:len(manifest['inputs'])]}/{expected[len(manifest['inputs']):]})")
    return {"counter": counter, "clock_hz": clock}


def run_once(link: Link, feeds: dict[str, np.ndarray], manifest: dict[str, Any]) -> tuple[int, list[np.ndarray]]:
    payload = b"".join(np.ascontiguousarray(feeds[s["name"]], dtype=s["dtype"]).tobytes() for s in manifest["inputs"])
    raw = link.request("R", payload)
    rc, low, high = struct.unpack_from("<iII", raw)
    if rc != 0:
        raise UserError(f"--serial {link.port}: ep_model_run returned {rc} (layer {rc - 1} failed)")
    outputs, offset = [], 12
    for spec in manifest["outputs"]:
        n = int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
        outputs.append(np.frombuffer(raw[offset:offset + n], dtype=spec["dtype"]).reshape(spec["shape"]))
        offset += n
    return low | high << 32, outputs


def profile_serial(bundle, manifest: dict[str, Any], port: str, *, baud: int = BAUD, repeat: int = 10,
                   timeout: float = 10.0, seed: int = 0) -> dict[str, Any]:
    """`repeat` inferences on the board, each on a fresh input checked against the reference runtime."""
    if repeat < 1:
        raise UserError("--repeat must be at least 1")
    source = load_source(bundle / manifest["model"])
    link = Link(port, baud, timeout)
    try:
        info = read_info(link, manifest)
        ticks, errors = [], []
        for r in range(repeat):
            feeds = source.random_feeds(seed + r)
            count, outputs = run_once(link, feeds, manifest)
            ticks.append(count)
            errors.append(check_outputs([source.reference(feeds)], [outputs], manifest["outputs"])["diff"].max_abs)
    finally:
        link.close()
    name, meaning = COUNTERS.get(info["counter"], (f"kind {info['counter']}", "board-defined ticks"))
    median = int(np.median(ticks))
    result: dict[str, Any] = {
        "bundle": str(bundle), "target": manifest["target"]["name"], "device": f"serial {port}", "serial": port,
        "runs": repeat, "counter": name, "counter_meaning": meaning, "clock_hz": info["clock_hz"],
        "ticks": median, "ticks_min": min(ticks), "ticks_max": max(ticks), "latency_ms": None,
        "max_abs_error": max(errors), "reference": source.reference_name,
        "flash_bytes": manifest["build"]["flash_bytes"], "ram_bytes": manifest["build"]["ram_bytes"],
    }
    if name == "qemu-icount":  # virtual time: instructions, not the board's cycles
        result["instructions"] = int(round(median * 1e9 / info["clock_hz"]))
    else:
        result["cycles"] = median
        result["latency_ms"] = 1e3 * median / info["clock_hz"] if info["clock_hz"] else None
    return result
