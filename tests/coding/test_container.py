"""The EPHC container: exact round trips of every kind of tensor, and corrupt input -> UserError only."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from edgeprune.coding import container as ephc
from edgeprune.errors import UserError

rng = np.random.default_rng(99)


def laplacian(shape, scale: float, dtype=np.int8) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(rng.laplace(0, scale, shape)), info.min, info.max).astype(dtype)


def pruned(shape, keep: float, dtype=np.int8) -> np.ndarray:
    w = laplacian(shape, 20, dtype)
    w[rng.random(shape) >= keep] = 0
    return w


def model_tensors() -> list[ephc.CodedTensor]:
    """One tensor of every kind the container holds."""
    conv = laplacian((16, 8, 3, 3), 12)
    long_gaps = np.zeros(5000, np.int8)
    long_gaps[[0, 1, 700, 701, 4000]] = [5, -5, 1, 127, -128]  # gaps of 698 and 3298 need fillers
    shared = rng.choice(rng.standard_normal(16).astype(np.float32), (40, 30))
    return [
        ephc.from_int("conv.weight", conv, rng.random(16).astype(np.float32) / 100, 0, axis=0),
        ephc.from_int("fc.weight", laplacian((10, 64), 30), 0.02, -3),
        ephc.from_int("u8.weight", rng.integers(100, 140, (4, 4)).astype(np.uint8), 0.1, 128),
        ephc.CodedTensor("uniform", rng.integers(-128, 128, 3000).astype(np.int8)),
        ephc.CodedTensor("skewed", pruned((3000,), 0.05), coding="dense"),
        ephc.CodedTensor("pruned.weight", pruned((32, 16, 3, 3), 0.1), coding="sparse"),
        ephc.CodedTensor("long_gaps", long_gaps, coding="sparse"),
        ephc.CodedTensor("int16", laplacian((300,), 2000, np.int16)),
        ephc.CodedTensor("int16.sparse", pruned((2000,), 0.05, np.int16), coding="sparse"),
        ephc.from_float("shared.weight", shared),
        ephc.from_float("shared.big", rng.standard_normal(3000).astype(np.float32)),  # uint16 indices
        ephc.CodedTensor("scalar", np.array(-7, np.int8)),
        ephc.CodedTensor("single", np.full((3, 3), 4, np.int8)),
        ephc.CodedTensor("empty", np.zeros((0, 4), np.int8)),
        ephc.CodedTensor("empty.sparse", np.zeros((2, 0), np.uint16), coding="sparse"),
        ephc.CodedTensor("all.fill", np.zeros(1000, np.int8), coding="sparse"),
        ephc.CodedTensor("no.fill", np.arange(-128, 128, dtype=np.int8), coding="sparse"),
        ephc.CodedTensor("名前/ünïcode", np.array([1, 2, 1], np.uint8)),
    ]


def assert_same(a: ephc.CodedTensor, b: ephc.CodedTensor) -> None:
    assert a.name == b.name
    assert a.values.dtype == b.values.dtype and a.values.shape == b.values.shape
    assert np.array_equal(a.values, b.values)
    assert type(a.quant) is type(b.quant)
    assert np.array_equal(ephc.to_float(a), ephc.to_float(b))


@pytest.mark.parametrize("max_gap", [2, 16, 256, 65536])
def test_round_trip_is_exact(max_gap):
    tensors = model_tensors()
    decoded = ephc.decode_container(ephc.encode_tensors(tensors, max_gap=max_gap))
    assert len(decoded) == len(tensors)
    for a, b in zip(tensors, decoded):
        assert_same(a, b)
        assert b.coding == a.coding or a.coding == "auto"


def test_float_weights_from_weight_sharing_come_back_bit_exact():
    shared = rng.choice(rng.standard_normal(8).astype(np.float32), (64, 64))
    (t,) = ephc.decode_container(ephc.encode_tensors([ephc.from_float("w", shared)]))
    assert t.values.dtype == np.uint8 and isinstance(t.quant, ephc.Codebook)
    assert np.array_equal(ephc.to_float(t).view(np.uint32), shared.view(np.uint32))
    special = np.array([0.0, -0.0, np.nan, np.inf], np.float32)
    (t,) = ephc.decode_container(ephc.encode_tensors([ephc.from_float("s", special)]))
    assert ephc.to_float(t).tobytes() == special.tobytes()
    with pytest.raises(UserError, match="quantize or share"):
        ephc.from_float("w", np.arange(70_000, dtype=np.float32))


def test_int8_per_channel_dequantization():
    q = np.array([[1, -2], [3, 4]], np.int8)
    t = ephc.from_int("w", q, np.array([0.5, 2.0], np.float32), np.array([0, 1]), axis=-1)
    assert np.array_equal(ephc.to_float(t), np.array([[0.5, -6.0], [1.5, 6.0]], np.float32))


def test_auto_coding_picks_sparse_for_pruned_and_dense_for_dense_weights():
    tensors = [ephc.CodedTensor("pruned", pruned((64, 64, 3, 3), 0.03)),
               ephc.CodedTensor("dense", laplacian((64, 64), 10))]
    data, stats = ephc.encode_with_stats(tensors)
    assert [s.coding for s in stats] == ["sparse", "dense"]
    assert [t.coding for t in ephc.decode_container(data)] == ["sparse", "dense"]
    dense_only = ephc.encode_with_stats([ephc.CodedTensor("pruned", tensors[0].values, coding="dense")])[1][0]
    # Dense, one symbol costs >= 1 bit (~2.6x the entropy here); pairs bring it under a bit, their larger table
    # counted, and sparse is still smaller.
    assert dense_only.huffman_bits < 0.85 * dense_only.n_elements
    assert stats[0].record_bytes < 0.6 * dense_only.record_bytes
    assert sum(s.record_bytes for s in stats) + 10 == len(data)
    for s in stats:
        assert s.entropy_bits <= s.huffman_bits <= 1.05 * s.entropy_bits


def test_unusable_tensors_are_user_errors():
    with pytest.raises(UserError, match="w: values must be int8"):
        ephc.encode_tensors([ephc.CodedTensor("w", np.zeros(3, np.float32))])
    with pytest.raises(UserError, match="outside a codebook"):
        ephc.encode_tensors([ephc.CodedTensor("w", np.array([0, 5], np.uint8), ephc.Codebook(np.zeros(2, np.float32)))])
    with pytest.raises(UserError, match="coding"):
        ephc.encode_tensors([ephc.CodedTensor("w", np.zeros(3, np.int8), coding="zip")])
    with pytest.raises(UserError, match="scales"):
        per_channel = ephc.Affine(np.ones(3, np.float32), np.zeros(3, np.int32), axis=0)  # axis 0 has 2 channels
        ephc.encode_tensors([ephc.CodedTensor("w", np.zeros((2, 3), np.int8), per_channel)])


def small_container() -> bytes:
    data, stats = ephc.encode_with_stats([
        ephc.from_int("a", laplacian((6, 5), 4), np.ones(6, np.float32), 0, axis=0),
        ephc.CodedTensor("b", pruned((40,), 0.2), coding="sparse"),
        ephc.from_float("c", np.array([0.5, -1.0, 0.5, 0.5], np.float32)),
        ephc.CodedTensor("d", np.full(3, 9, np.int16)),
        ephc.CodedTensor("e", skewed_odd(), coding="dense"),  # a paired stream (version 2) with a padded last pair
        ephc.CodedTensor("f", broad_skewed(801), coding="dense"),  # paired, with a compact table (version 3)
    ], work_limit=None)
    # a compact pair table kept and reused across records (version 4)
    assert sum(s.shared_streams for s in stats) >= 3 and any(s.work_bytes for s in stats)
    assert not all(s.shared_streams for s in stats)
    return data


def broad_skewed(n: int) -> np.ndarray:
    """92% zeros and 60 other symbols: pairs pay, and their many distinct pairs want a compact table."""
    r = np.random.default_rng(1)
    return np.where(r.random(n) < 0.92, 0, r.integers(1, 61, n)).astype(np.uint8)


def skewed_odd() -> np.ndarray:
    v = np.zeros(201, np.uint8)
    v[[3, 50, 51, 120, 199, 200]] = [1, 2, 1, 1, 3, 1]
    return v


# Written by the version-1 encoder (before paired streams): an int8 affine tensor and a sparse one.
V1_CONTAINER = bytes.fromhex(
    "455048430100020000003c0000000100770102020000000400000001ff010000000000003f000000000008000000010301000000"
    "010000000200000000ff020300040000020000003cc099d6900037000000010073010118000000000100000200000001010200"
    "000002140004000001000000800200000001010200000007fe00040000010000004073782ca9")
V1_VALUES = {"w": np.array([[0, 0, 3, -1], [0, 2, 0, 0]], np.int8), "s": np.array([0] * 20 + [7, 0, 0, -2], np.int8)}
# Written by the version-2 encoder (before compact pair tables): a dense uint8 tensor and a sparse one with paired gaps.
V2_CONTAINER = bytes.fromhex(
    "45504843020002000000300000000100700201290000000000290000000103010000000100000002000000000102030004000007000000"
    "101a0080000f0094403fc33900000001007301011e00000000010000030000008101020000000e02020b00040000010000004003000000"
    "01010200000005ff0004000001000000401bd08bac")
V2_VALUES = {"p": np.array([0, 0, 0, 1] + [0] * 6 + [2, 1] + [0] * 8 + [1] + [0] * 18 + [3, 1], np.uint8),
             "s": np.array([0, 0, 5] + [0] * 14 + [-1] + [0] * 11 + [5], np.int8)}


def paired_flag_offset(data: bytes) -> int:
    """Where the first stream's sym_bytes is, in a container whose first tensor is dense, 1-byte, unquantized."""
    (name_len,) = struct.unpack_from("<H", data, 14)
    ndim = data[14 + 2 + name_len + 1]
    return 14 + 2 + name_len + 2 + 4 * ndim + 1 + 1 + 4


def test_header_errors_say_what_is_wrong():
    data = small_container()
    with pytest.raises(UserError, match="m.ephc: not an EPHC container"):
        ephc.decode_container(b"PK\x03\x04" + data[4:], "m.ephc")
    with pytest.raises(UserError, match="unsupported EPHC version 9"):
        ephc.decode_container(data[:4] + struct.pack("<H", 9) + data[6:])
    with pytest.raises(UserError, match="unexpected bytes after the last tensor"):
        ephc.decode_container(data + b"\0")
    bad = bytearray(data)
    bad[-6] ^= 0x40  # inside the bits of the last tensor
    with pytest.raises(UserError, match=r"m.ephc: tensor 5 \('f'\): CRC mismatch"):
        ephc.decode_container(bytes(bad), "m.ephc")


def test_truncation_at_every_offset_is_a_user_error():
    data = small_container()
    for cut in range(len(data)):
        with pytest.raises(UserError, match="truncated|bad magic"):
            ephc.decode_container(data[:cut])


def test_every_corrupted_byte_is_a_user_error():
    data = small_container()
    for offset in range(len(data)):
        for flip in (0x01, 0x80, int(rng.integers(2, 255))):
            bad = bytearray(data)
            bad[offset] ^= flip
            with pytest.raises(UserError):
                ephc.decode_container(bytes(bad))


def record_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record body."""
    spans, pos = [], 10
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        spans.append((pos + 4, pos + 4 + length))
        pos += 8 + length
    return spans


def mutate_with_valid_crc(data: bytes, rng: np.random.Generator) -> bytes:
    """A record that passes its CRC but has 1-3 bytes changed: only the parser's checks stand between it and garbage."""
    bad, spans = bytearray(data), record_spans(data)
    start, end = spans[rng.integers(len(spans))]
    for offset in rng.integers(start, end, rng.integers(1, 4)):
        bad[offset] = int(rng.integers(256)) if rng.random() < 0.5 else bad[offset] ^ (1 << int(rng.integers(8)))
    struct.pack_into("<I", bad, end, zlib.crc32(bytes(bad[start:end])))
    return bytes(bad)


def test_malformed_records_with_valid_crc_are_user_errors_or_decode_cleanly():
    data = small_container()
    outcomes = set()
    for _ in range(1500):
        try:
            tensors = ephc.decode_container(mutate_with_valid_crc(data, rng), max_elements=10**6)
        except UserError:
            outcomes.add("error")
            continue
        outcomes.add("decoded")  # e.g. a changed scale or name: still a well-formed container
        for t in tensors:
            assert t.values.size == np.prod(t.values.shape)
            with np.errstate(invalid="ignore", over="ignore"):  # a corrupt scale may well be inf or NaN
                ephc.to_float(t)
    assert outcomes == {"error", "decoded"}


@pytest.mark.parametrize("data, values", [(V1_CONTAINER, V1_VALUES), (V2_CONTAINER, V2_VALUES)])
def test_older_versions_still_decode(data, values):
    tensors = ephc.decode_container(data, "old.ephc")
    assert [t.name for t in tensors] == list(values)
    for t in tensors:
        assert np.array_equal(t.values, values[t.name]) and t.values.dtype == values[t.name].dtype


def version_3_container() -> tuple[bytes, list[ephc.CodedTensor]]:
    """Without shared tables the version-4 encoder writes version 3's bytes but for the version field (checked
    against the version-3 encoder when it was replaced), compact pair tables included."""
    tensors = model_tensors() + [ephc.CodedTensor("f", broad_skewed(801), coding="dense")]
    data = bytearray(ephc.encode_tensors(tensors, work_limit=None, share_tables=False))
    data[4] = 3
    return bytes(data), tensors


def test_version_3_still_decodes():
    data, tensors = version_3_container()
    for a, b in zip(tensors, ephc.decode_container(data), strict=True):
        assert_same(a, b)


def test_paired_streams_need_version_2():
    data = bytearray(ephc.encode_tensors([ephc.CodedTensor("p", skewed_odd(), coding="dense")]))
    flag = paired_flag_offset(bytes(data))
    assert data[flag] == 1 | ephc.PAIRED and data[4] == ephc.VERSION == 4
    data[4] = 1
    with pytest.raises(UserError, match=r"'p'\): values stream: 1-byte symbols in pairs.*version 1"):
        ephc.decode_container(bytes(data))


@pytest.mark.parametrize("n", [2, 3, 2047, 2048, 2049, 5001])
def test_paired_streams_round_trip_across_sync_points(n):
    """Odd counts drop their padding; sync points (every 1024 pairs) are crossed; gaps pair too."""
    v = np.where(rng.random(n) < 0.93, 0, rng.integers(-3, 4, n)).astype(np.int8)
    v[:2] = [0, 1]
    for coding in ("dense", "sparse"):
        data, (stat,) = ephc.encode_with_stats([ephc.CodedTensor("w", v, coding=coding)])
        assert np.array_equal(ephc.decode_container(data)[0].values, v)
        if coding == "dense" and n > 100:
            # under the 1 bit/symbol of single codes, the larger table included
            assert stat.paired_streams == 1 and stat.huffman_bits < n


def test_one_pair_symbol_repeated_costs_no_bits():
    v = np.tile(np.array([0, 5], np.uint8), 300)
    data, (stat,) = ephc.encode_with_stats([ephc.CodedTensor("w", v, coding="dense")])
    assert stat.paired_streams == 1 and stat.huffman_bits == 0 and stat.entropy_bits == 600
    assert np.array_equal(ephc.decode_container(data)[0].values, v)


def test_pairs_are_taken_only_where_the_stream_gets_smaller():
    rng_ = np.random.default_rng(3)
    flat = rng_.integers(-128, 128, 4000).astype(np.int8)  # 8 bits of entropy: pairs cannot help, the table grows
    skewed = np.where(rng_.random(4000) < 0.9, 0, 1).astype(np.int8)  # H = 0.47: single codes cost 1 bit
    _, stats = ephc.encode_with_stats([ephc.CodedTensor("flat", flat, coding="dense"),
                                       ephc.CodedTensor("skewed", skewed, coding="dense")])
    assert [s.paired_streams for s in stats] == [0, 1]
    assert stats[1].entropy_bits < stats[1].huffman_bits < 0.7 * 4000  # pairs: 0.65 bit/symbol for 0.47


def compact_flag(data: bytes) -> int:
    """Offset of the sym_bytes of the only stream of a one-tensor container written by encode_tensors([dense 1-D])."""
    return paired_flag_offset(data)


def test_compact_pair_tables_within_the_work_limit_only():
    v = broad_skewed(3001)
    t = ephc.CodedTensor("w", v, coding="dense")
    (flat, (s0,)), (compact, (s1,)) = (ephc.encode_with_stats([t], work_limit=w) for w in (0, None))
    assert compact[compact_flag(compact)] == 1 | ephc.PAIRED | ephc.COMPACT
    assert s0.work_bytes == 0 and flat[compact_flag(flat)] & ephc.COMPACT == 0
    n_pairs = s1.work_bytes // 2
    assert 100 < n_pairs < 400 and len(compact) < len(flat) - n_pairs // 2  # flat: 2 bytes a pair
    assert s1.entropy_bits == s0.entropy_bits and s1.huffman_bits < s0.huffman_bits
    exact = ephc.encode_with_stats([t], work_limit=s1.work_bytes)[1][0]
    assert exact.work_bytes == s1.work_bytes
    assert ephc.encode_with_stats([t], work_limit=s1.work_bytes - 2)[1][0].work_bytes == 0
    for data in (flat, compact):
        assert np.array_equal(ephc.decode_container(data)[0].values, v)
    with pytest.raises(UserError, match="work_limit"):
        ephc.encode_tensors([t], work_limit=-1)


def test_compact_tables_need_version_3():
    data = bytearray(ephc.encode_tensors([ephc.CodedTensor("p", broad_skewed(801), coding="dense")], work_limit=None))
    assert data[compact_flag(bytes(data))] & ephc.COMPACT
    data[4] = 2
    with pytest.raises(UserError, match=r"values stream: 1-byte symbols in pairs with a compact table.*version 2"):
        ephc.decode_container(bytes(data))


@pytest.mark.parametrize("n", [2, 5, 4097])
def test_compact_tables_round_trip_sparse_and_dense(n):
    """Gaps and values both paired with compact tables; long zero runs and repeats in the length grid."""
    v = np.where(rng.random(n) < 0.9, 0, rng.integers(-100, 100, n)).astype(np.int8)
    v[:2] = [0, 3]
    for coding in ("dense", "sparse"):
        data, (stat,) = ephc.encode_with_stats([ephc.CodedTensor("w", v, coding=coding)], max_gap=64, work_limit=None)
        assert np.array_equal(ephc.decode_container(data)[0].values, v)


def mostly_zeros(r: np.random.Generator, n: int) -> np.ndarray:
    """70% zeros, the rest skewed over 15 symbols: pairs pay, a pair table of its own only on long streams."""
    return np.where(r.random(n) < 0.7, 0, np.minimum(r.geometric(0.3, n), 15)).astype(np.uint8)


def shared_pair() -> tuple[bytes, list[int]]:
    """Two dense uint8 tensors of one distribution: the second reuses the first's table (version 4). Also the
    offsets of each record's stream flags (the slot byte follows)."""
    r = np.random.default_rng(4)
    data, stats = ephc.encode_with_stats([ephc.CodedTensor(name, mostly_zeros(r, n), coding="dense")
                                          for name, n in (("p", 2000), ("q", 1500))], work_limit=None)
    assert [s.shared_streams for s in stats] == [1, 1]
    flags = [start + 2 + data[start] + 2 + 4 + 1 + 1 + 4 for start, _ in record_spans(data)]
    assert [data[f] for f in flags] == [0xC1 | ephc.KEEP, 0xC1 | ephc.REUSE] and data[flags[1] + 1] == data[flags[0] + 1]
    return data, flags


def with_valid_crc(data: bytes, edits: dict[int, int]) -> bytes:
    """`data` with bytes changed and every record's CRC made to match again."""
    bad = bytearray(data)
    for offset, value in edits.items():
        bad[offset] = value
    for start, end in record_spans(bytes(bad)):
        struct.pack_into("<I", bad, end, zlib.crc32(bytes(bad[start:end])))
    return bytes(bad)


def bad_table_references() -> dict[str, bytes]:
    """Containers whose table slots break a rule, with valid CRCs: both decoders must refuse each."""
    data, (keep, reuse) = shared_pair()
    return {"empty slot": with_valid_crc(data, {reuse + 1: 3}), "no such slot": with_valid_crc(data, {reuse + 1: 8}),
            "keep and reuse": with_valid_crc(data, {reuse: 1 | ephc.KEEP | ephc.REUSE}),
            "other symbols": with_valid_crc(data, {reuse: 1 | ephc.PAIRED | ephc.REUSE}),  # no compact flag
            "kept in no slot": with_valid_crc(data, {keep + 1: 8}), "version 3": with_valid_crc(data, {4: 3})}


def test_streams_share_tables_where_that_is_smaller():
    """Layers of one distribution share one table: smaller, and exact; sharing never changes the values."""
    r = np.random.default_rng(8)
    layers = [mostly_zeros(r, n) for n in (512, 900, 2304, 700)]
    tensors = [ephc.CodedTensor(f"l{i}", v, coding="dense") for i, v in enumerate(layers)]
    (shared, s_stats), (own, o_stats) = (ephc.encode_with_stats(tensors, work_limit=None, share_tables=share)
                                         for share in (True, False))
    assert sum(s.shared_streams for s in s_stats) == 4 and not any(s.shared_streams for s in o_stats)
    assert len(shared) < len(own) - 100
    # a pair code saves here, and its table (counted, beyond the single codes' own) no longer eats the saving
    assert [kind for s in s_stats for kind, _ in s.streams] == ["pairs, compact, slot 0 kept"] + [
        "pairs, compact, slot 0 reused"] * 3
    assert sum(s.huffman_bits for s in s_stats) < sum(s.huffman_bits for s in o_stats) - 400
    for data in (shared, own):
        assert all(np.array_equal(t.values, v) for t, v in zip(ephc.decode_container(data), layers))
    in_place = ephc.encode_with_stats(tensors)[1]  # work_limit 0: no compact table, shared or not
    assert not any(s.work_bytes for s in in_place)


@pytest.mark.parametrize("case", ["empty slot", "no such slot", "keep and reuse", "other symbols", "kept in no slot",
                                  "version 3"])
def test_table_references_to_nothing_are_user_errors(case):
    with pytest.raises(UserError, match=r"tensor [01] \('[pq]'\): values stream"):
        ephc.decode_container(bad_table_references()[case])


def self_shared() -> tuple[bytes, np.ndarray]:
    """A sparse tensor whose values reuse the pair table its gaps keep, in the same record."""
    r = np.random.default_rng(3)
    gaps, values = (np.minimum(r.geometric(0.8, 1000), 15) for _ in range(2))
    v = np.zeros(int(gaps.sum()) + gaps.size, np.uint8)
    v[np.cumsum(gaps + 1) - 1] = values
    data, (stat,) = ephc.encode_with_stats([ephc.CodedTensor("s", v, coding="sparse")], work_limit=None)
    assert [kind for kind, _ in stat.streams] == ["pairs, compact, slot 0 kept", "pairs, compact, slot 0 reused"]
    return data, v


def test_values_reuse_the_table_their_gaps_keep():
    data, v = self_shared()
    assert np.array_equal(ephc.decode_container(data)[0].values, v)
