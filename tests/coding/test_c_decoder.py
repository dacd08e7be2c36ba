"""The C decoder (edgeprune/coding/c) against the Python encoder: same values, same verdicts on bad input.

The decoder is compiled with the system gcc as strictly as the brief asks, and once more with
AddressSanitizer + UBSan where they work, for the corrupt-input tests: the test driver gives every
container and tensor a buffer of exactly its size, so any stray access aborts the run.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgeprune.coding import container as ephc
from edgeprune.errors import UserError

from test_container import (V1_CONTAINER, V1_VALUES, V2_CONTAINER, V2_VALUES, bad_table_references, broad_skewed,
                            model_tensors, mutate_with_valid_crc, paired_flag_offset, self_shared, shared_pair,
                            skewed_odd, small_container, version_3_container)

C_DIR = Path(ephc.__file__).parent / "c"
DRIVER = Path(__file__).with_name("ep_driver.c")
STRICT = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror"]
SANITIZE = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
EP_ERR_CRC, EP_ERR_FORMAT, EP_ERR_BUFFER = -4, -5, -7
MAX_ELEMENTS = 10**6

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def build(out: Path, flags: list[str]) -> Path:
    subprocess.run(["gcc", *STRICT, *flags, f"-I{C_DIR}", str(C_DIR / "ep_huffman.c"), str(DRIVER), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("c") / "ep_driver", ["-O2"])


@pytest.fixture(scope="module")
def checked_driver(tmp_path_factory, driver) -> Path:
    """The sanitizer build, or the plain one where the sanitizers cannot build or run (e.g. under ulimit -v)."""
    try:
        exe = build(tmp_path_factory.mktemp("asan") / "ep_driver", SANITIZE)
    except subprocess.CalledProcessError:
        return driver
    return exe if subprocess.run([str(exe)], capture_output=True).returncode == 2 else driver  # 2: usage


def read_driver_output(raw: bytes) -> list[tuple]:
    """(name, dtype, quant, coding, dims, params, zero points, values bytes) per tensor."""
    tensors, pos = [], 0

    def take(n: int) -> bytes:
        nonlocal pos
        pos += n
        return raw[pos - n:pos]

    while pos < len(raw):
        (name_len,) = struct.unpack("<H", take(2))
        name = take(name_len).decode()
        dtype, quant, coding, ndim = take(4)
        dims = struct.unpack(f"<{ndim}I", take(4 * ndim))
        (n_params,) = struct.unpack("<I", take(4))
        params = np.frombuffer(take(4 * n_params), "<f4")
        zero_points = np.frombuffer(take(4 * n_params), "<i4") if quant == ephc.QUANT_AFFINE else None
        size = int(np.prod(dims, dtype=np.int64)) * ephc.DTYPES[dtype].itemsize
        tensors.append((name, dtype, quant, coding, dims, params, zero_points, take(size)))
    return tensors


def decode_and_compare(command: list[str], tmp_path: Path) -> None:
    """Every kind of tensor, decoded by `command` (the driver, maybe under an emulator), against numpy."""
    tensors = ephc.decode_container(ephc.encode_tensors(model_tensors(), max_gap=16))  # short gaps: many fillers
    src, out = tmp_path / "m.ephc", tmp_path / "m.out"
    data, stats = ephc.encode_with_stats(tensors, work_limit=None)
    assert any(s.work_bytes for s in stats) and any(s.shared_streams for s in stats)  # compact and shared tables too
    src.write_bytes(data)
    subprocess.run([*command, "decode", str(src), str(out)], check=True)
    decoded = read_driver_output(out.read_bytes())
    assert len(decoded) == len(tensors)
    for t, (name, dtype, quant, coding, dims, params, zero_points, values) in zip(tensors, decoded):
        assert (name, ephc.DTYPES[dtype], dims) == (t.name, t.values.dtype, t.values.shape)
        assert coding == ephc.CODINGS[t.coding]
        assert values == t.values.astype(t.values.dtype.newbyteorder("<")).tobytes()
        if isinstance(t.quant, ephc.Affine):
            assert np.array_equal(params, t.quant.scale) and np.array_equal(zero_points, t.quant.zero_point)
        elif isinstance(t.quant, ephc.Codebook):
            assert np.array_equal(params, t.quant.values)
        else:
            assert quant == ephc.QUANT_NONE


def test_c_decoder_matches_numpy_byte_for_byte(driver, tmp_path):
    decode_and_compare([str(driver)], tmp_path)


@pytest.mark.cross
@pytest.mark.emulator
@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64-static") is None,
                    reason="needs gcc-aarch64-linux-gnu and qemu-user-static (tools/setup.sh)")
def test_c_decoder_on_arm(tmp_path):
    """On AArch64, where plain char is unsigned: the decoder must not depend on the host's choices."""
    exe = tmp_path / "ep_driver_arm"
    subprocess.run(["aarch64-linux-gnu-gcc", *STRICT, "-O2", "-static", f"-I{C_DIR}", str(C_DIR / "ep_huffman.c"),
                    str(DRIVER), "-o", str(exe)], check=True, capture_output=True)
    decode_and_compare(["qemu-aarch64-static", str(exe)], tmp_path)


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils)")
def test_decoder_needs_nothing_from_libc_but_memcpy_and_memcmp(tmp_path):
    """No malloc, no stdio: what a bare-metal firmware can link."""
    obj = tmp_path / "ep_huffman.o"
    subprocess.run(["gcc", *STRICT, "-O2", "-c", str(C_DIR / "ep_huffman.c"), "-o", str(obj)], check=True)
    undefined = subprocess.run(["nm", "-u", str(obj)], check=True, capture_output=True, text=True).stdout.split()
    assert set(undefined) - {"U"} <= {"memcpy", "memcmp"}


def test_c_decoder_on_large_tensors(driver, tmp_path):
    """Several sync points per stream, 16-bit symbols and gaps longer than any gap symbol."""
    rng = np.random.default_rng(5)
    sparse = np.zeros(2_000_000, np.int16)
    sparse[rng.choice(sparse.size, 3000, replace=False)] = rng.integers(-30000, 30000, 3000)
    skewed = np.where(rng.random(300_001) < 0.9, 0, rng.integers(-2, 3, 300_001)).astype(np.int8)
    gaps = np.where(rng.random(5000) < 0.8, 0, rng.integers(1, 60, 5000))
    bursts = np.zeros(int(gaps.sum()) + gaps.size, np.int8)
    bursts[np.cumsum(gaps + 1) - 1] = np.where(rng.random(5000) < 0.85, 1, rng.integers(2, 60, 5000))
    tensors = [ephc.CodedTensor("lap", np.clip(np.round(rng.laplace(0, 9, 300_000)), -128, 127).astype(np.int8)),
               ephc.CodedTensor("sparse16", sparse, coding="sparse"),
               ephc.CodedTensor("paired", skewed, coding="dense"),  # 150001 pair codes, 146 sync points
               ephc.CodedTensor("bursts", bursts, coding="sparse")]  # gaps and values both with compact tables
    src, out = tmp_path / "big.ephc", tmp_path / "big.out"
    data, stats = ephc.encode_with_stats(tensors, work_limit=None)
    assert stats[2].paired_streams == 1 and stats[3].paired_streams == 2 and stats[3].work_bytes > 0
    src.write_bytes(data)
    subprocess.run([str(driver), "decode", str(src), str(out)], check=True)
    for t, d in zip(tensors, read_driver_output(out.read_bytes())):
        assert d[-1] == t.values.tobytes()


def run_batch(exe: Path, tmp_path: Path, containers: list[bytes], work: bool = True) -> list[tuple[int, int]]:
    """(status, CRC-32 of the decoded values) of each container, decoded by the C driver (without workspaces:
    ep_decode instead of ep_decode_work)."""
    batch = tmp_path / "batch.bin"
    batch.write_bytes(b"".join(struct.pack("<I", len(c)) + c for c in containers))
    run = subprocess.run([str(exe), "batch", str(batch), str(MAX_ELEMENTS), *([] if work else ["nowork"])],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return [tuple(int(x) for x in line.split()) for line in run.stdout.splitlines()]


def test_every_truncation_and_corrupted_byte_gives_an_error_code(checked_driver, tmp_path):
    data = small_container()
    rng = np.random.default_rng(7)
    cases = [data[:cut] for cut in range(len(data))]
    for offset in range(len(data)):
        bad = bytearray(data)
        bad[offset] ^= int(rng.integers(1, 256))
        cases.append(bytes(bad))
    statuses = [status for status, _ in run_batch(checked_driver, tmp_path, cases)]
    assert len(statuses) == len(cases) and all(s < 0 for s in statuses)
    assert EP_ERR_CRC in statuses


def compact_container() -> bytes:
    """Only compact pair tables: a dense stream, and a sparse tensor whose gaps and values both have one."""
    r = np.random.default_rng(2)
    gaps = np.where(r.random(600) < 0.9, 0, r.integers(1, 30, 600))
    bursts = np.zeros(int(gaps.sum()) + gaps.size, np.uint8)
    bursts[np.cumsum(gaps + 1) - 1] = np.where(r.random(600) < 0.9, 1, r.integers(2, 30, 600))
    data, stats = ephc.encode_with_stats([ephc.CodedTensor("f", broad_skewed(801), coding="dense"),
                                          ephc.CodedTensor("g", bursts, coding="sparse")], work_limit=None)
    assert [s.paired_streams for s in stats] == [1, 2] and stats[1].work_bytes > 0
    return data


@pytest.mark.parametrize("container, n_cases", [(small_container, 1000), (compact_container, 600),
                                                (lambda: self_shared()[0], 300)])
def test_c_and_python_agree_on_malformed_records_with_valid_crc(checked_driver, tmp_path, container, n_cases):
    """Whatever passes the CRC, both decoders accept the same containers and decode them alike."""
    data = container()
    rng = np.random.default_rng(11)
    cases = [data] + [mutate_with_valid_crc(data, rng) for _ in range(n_cases)]
    accepted = 0
    for case, (status, crc) in zip(cases, run_batch(checked_driver, tmp_path, cases), strict=True):
        try:
            tensors = ephc.decode_container(case, max_elements=MAX_ELEMENTS)
        except UserError as e:
            # Names are UTF-8 for Python; the C decoder hands out their bytes unchecked.
            assert status < 0 or "not UTF-8" in str(e), (status, e)
            continue
        accepted += 1
        assert status == 0
        expected = 0
        for t in tensors:
            expected = zlib.crc32(t.values.astype(t.values.dtype.newbyteorder("<")).tobytes(), expected)
        assert crc == expected
    assert 10 < accepted < len(cases)


def test_c_decoder_reads_versions_1_to_3_and_refuses_newer_streams_there(driver, tmp_path):
    pairs, compact = (bytearray(ephc.encode_tensors([ephc.CodedTensor("p", v, coding="dense")], work_limit=None))
                      for v in (skewed_odd(), broad_skewed(801)))
    assert pairs[paired_flag_offset(bytes(pairs))] == 1 | ephc.PAIRED
    assert compact[paired_flag_offset(bytes(compact))] == 1 | ephc.PAIRED | ephc.COMPACT
    pairs[4], compact[4] = 1, 2  # paired streams need version 2, compact tables version 3
    v3, v3_tensors = version_3_container()
    cases = [V1_CONTAINER, V2_CONTAINER, bytes(pairs), bytes(compact), v3]
    statuses = run_batch(driver, tmp_path, cases)
    assert [status for status, _ in statuses] == [0, 0, EP_ERR_FORMAT, EP_ERR_FORMAT, 0]
    expected = 0
    for t in v3_tensors:
        expected = zlib.crc32(t.values.astype(t.values.dtype.newbyteorder("<")).tobytes(), expected)
    assert statuses[-1][1] == expected
    for data, values in ((V1_CONTAINER, V1_VALUES), (V2_CONTAINER, V2_VALUES)):
        src, out = tmp_path / "old.ephc", tmp_path / "old.out"
        src.write_bytes(data)
        subprocess.run([str(driver), "decode", str(src), str(out)], check=True)
        assert [d[-1] for d in read_driver_output(out.read_bytes())] == [v.tobytes() for v in values.values()]


def test_compact_tables_need_the_callers_workspace(driver, tmp_path):
    """ep_decode has no workspace: a compact table is EP_ERR_BUFFER there, never read out of bounds; with
    work_limit 0 (the default) the encoder keeps every table readable in place."""
    t = [ephc.CodedTensor("f", broad_skewed(3001), coding="dense")]
    compact, in_place = ephc.encode_tensors(t, work_limit=None), ephc.encode_tensors(t)
    assert run_batch(driver, tmp_path, [compact, in_place], work=False) == [
        (EP_ERR_BUFFER, 0), run_batch(driver, tmp_path, [compact])[0]]


def test_c_decoder_refuses_table_references_to_nothing(checked_driver, tmp_path):
    """A reused slot that holds no table (or one of other symbols) is EP_ERR_FORMAT, as in Python."""
    good, _ = shared_pair()
    bad = bad_table_references()
    statuses = run_batch(checked_driver, tmp_path, [good, *bad.values()])
    assert statuses[0][0] == 0 and [s for s, _ in statuses[1:]] == [EP_ERR_FORMAT] * len(bad)


def test_c_decoder_reuses_a_table_kept_in_the_same_record(driver, tmp_path):
    data, v = self_shared()
    src, out = tmp_path / "s.ephc", tmp_path / "s.out"
    src.write_bytes(data)
    subprocess.run([str(driver), "decode", str(src), str(out)], check=True)
    assert read_driver_output(out.read_bytes())[0][-1] == v.tobytes()
