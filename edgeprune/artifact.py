"""The bundle: one folder per (model, target), written atomically, every file hashed.

A bundle is built in a hidden temporary folder beside its destination and renamed into place only
when complete, so a failed run leaves nothing behind. Nothing in it depends on the time or the
machine's paths, so two runs with the same inputs give byte-identical files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgeprune.errors import UserError

MANIFEST = "manifest.json"
FORMAT = "edgeprune-bundle/1"


def sha256_file(path: Path) -> str:
    """A folder (a model written by `edgeprune compress`) hashes as its files' names and digests, in order."""
    if path.is_dir():
        return hashlib.sha256("".join(f"{f.name}:{sha256_file(f)}\n" for f in sorted(path.iterdir()) if f.is_file())
                              .encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_destination(out: Path, force: bool, marker: str = MANIFEST) -> None:
    """Refuse early (before any work) to overwrite, and never replace a folder we did not write.

    `marker` is the file that proves we wrote it (a bundle's manifest, a compress folder's weights).
    """
    if out.exists() or out.is_symlink():
        if not force:
            raise UserError(f"{out}: already exists (use --force to replace it)")
        if not out.is_dir() or not (out / marker).is_file():
            raise UserError(f"{out}: exists and was not written by edgeprune; refusing to replace it")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"{out}: {parent} is a file, not a folder")


@contextmanager
def staging(out: Path, force: bool, marker: str = MANIFEST) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes `out` (replacing an old one of ours if forced)."""
    out = Path(out)
    check_destination(out, force, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_file(path: Path, data: bytes, force: bool) -> Path:
    """One output file, written beside its destination and renamed over it only when complete."""
    path = Path(path)
    if path.exists() and not force:
        raise UserError(f"{path}: already exists (use --force to replace it)")
    if path.is_dir():
        raise UserError(f"{path}: is a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """Relative path -> size and SHA-256 for every file but the manifest, in sorted order."""
    table = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != MANIFEST:
            table[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return table


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    manifest = {"format": FORMAT, **manifest, "files": file_table(folder)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def load_manifest(bundle: Path) -> dict[str, Any]:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise UserError(f"{bundle}: not an edgeprune bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{path}: not a {FORMAT} manifest")
    return manifest


def verify(bundle: str | Path) -> dict[str, Any]:
    """Every listed file present with its size and hash, and no unlisted file; returns the manifest."""
    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    actual = file_table(bundle)
    for rel, want in manifest["files"].items():
        have = actual.get(rel)
        if have is None:
            raise UserError(f"{bundle / rel}: listed in the manifest but missing")
        if have != want:
            raise UserError(f"{bundle / rel}: SHA-256 or size differs from the manifest (modified or corrupt)")
    extra = sorted(set(actual) - set(manifest["files"]))
    if extra:
        raise UserError(f"{bundle / extra[0]}: not listed in the manifest")
    return manifest
