"""The data a run was started on, fingerprinted in the run folder (``data.json``), so that
``--resume`` on a ``--data`` file whose contents changed is refused with the reason."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["FINGERPRINT_NAME", "check_unchanged", "fingerprint", "record"]

FINGERPRINT_NAME = "data.json"


def fingerprint(path) -> dict:
    """``{"path", "bytes", "blake2b"}`` of a data file (or of every file of a folder)."""
    path = Path(path).absolute()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.blake2b(digest_size=16)
    size = 0
    for file in files:
        h.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    return {"path": str(path), "bytes": size, "blake2b": h.hexdigest()}


def record(folder, data) -> None:
    """Writes ``data.json`` for a run on the file ``data`` (nothing for a built-in set)."""
    if data:
        (Path(folder) / FINGERPRINT_NAME).write_text(json.dumps(fingerprint(data), indent=2))


def check_unchanged(folder, data, allow_changed: bool) -> None:
    """Raises ``ValueError`` when ``data`` is not the data the run in ``folder`` started on.

    Args:
      folder: the run folder.
      data: the run's ``--data`` path (``None`` for a built-in data set).
      allow_changed: resume anyway (``--allow-changed-data``).
    """
    stored_file = Path(folder) / FINGERPRINT_NAME
    if not data or allow_changed or not stored_file.exists():
        return
    stored = json.loads(stored_file.read_text())
    if not Path(data).exists():
        raise ValueError(f"--resume: the run's --data file {data!r} no longer exists")
    now = fingerprint(data)
    if now["blake2b"] != stored.get("blake2b"):
        raise ValueError(
            f"--resume: the contents of --data {data} changed since the run started "
            f"({stored.get('bytes')} bytes, digest {stored.get('blake2b')} then; "
            f"{now['bytes']} bytes, digest {now['blake2b']} now); pass --allow-changed-data "
            "to resume on the new contents anyway"
        )
