"""Helpers for the service tests: a live server in a thread, bundle versions, symlink swaps."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from bundle.manifest import seal
from harness.live import LiveServer
from harness.ports import free_port

__all__ = ["LiveServer", "bundle_version", "free_port", "repoint"]


def bundle_version(src: Path, dst: Path, version: str) -> Path:
    """A copy of ``src`` announcing another version (bundle.json edited, then re-sealed)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "bundle.json").read_text())
    manifest["version"] = version
    (dst / "bundle.json").write_text(json.dumps(manifest, indent=2))
    seal(dst)
    return dst


def repoint(link: Path, target: Path) -> None:
    """Atomically re-point a symlink (what a deploy does: ln -sfn new tmp && mv -T tmp link)."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)
