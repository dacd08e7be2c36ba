"""Bundles: atomic writes, no overwrite without --force, hashes that catch any change."""
from __future__ import annotations

import json

import pytest

from edgeprune import artifact
from edgeprune.errors import UserError


def _make(out, force=False, payload=b"library", fail=False):
    with artifact.staging(out, force) as tmp:
        (tmp / "model.so").write_bytes(payload)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "notes.txt").write_text("hello")
        if fail:
            raise RuntimeError("build failed half way")
        artifact.write_manifest(tmp, {"target": {"name": "host"}})


def test_write_verify_and_tamper(tmp_path):
    out = tmp_path / "b"
    _make(out)
    manifest = artifact.verify(out)
    assert set(manifest["files"]) == {"model.so", "sub/notes.txt"}
    (out / "model.so").write_bytes(b"librarY")
    with pytest.raises(UserError, match="model.so: SHA-256"):
        artifact.verify(out)


def test_extra_and_missing_files_fail(tmp_path):
    out = tmp_path / "b"
    _make(out)
    (out / "stray.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="stray.bin: not listed"):
        artifact.verify(out)
    (out / "stray.bin").unlink()
    (out / "sub" / "notes.txt").unlink()
    with pytest.raises(UserError, match="notes.txt: listed in the manifest but missing"):
        artifact.verify(out)


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        _make(tmp_path / "b", fail=True)
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_only_bundles(tmp_path):
    out = tmp_path / "b"
    _make(out)
    with pytest.raises(UserError, match="--force"):
        _make(out)
    _make(out, force=True, payload=b"new")
    assert (out / "model.so").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    # a failed forced rebuild keeps the old bundle
    with pytest.raises(RuntimeError):
        _make(out, force=True, payload=b"newer", fail=True)
    assert (out / "model.so").read_bytes() == b"new"
    artifact.verify(out)


def test_not_a_bundle(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="not a edgeprune-bundle/1 manifest"):
        artifact.verify(tmp_path)
    with pytest.raises(UserError, match="no manifest.json"):
        artifact.verify(tmp_path / "nothing")
