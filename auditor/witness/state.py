"""The witness's memory: per origin, the latest checkpoint it cosigned, persisted atomically.

One JSON file (``{origin: {"size", "root", "note"}}``), rewritten through a temporary file,
fsync and rename before a cosignature is returned. Checking the old size and storing the new
checkpoint happen under one lock (a thread lock for the server's threads, ``flock`` against a
second process on the same file), so two concurrent requests cannot roll an origin back.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import ConfigError


@dataclass(frozen=True)
class Cosigned:
    size: int
    root: bytes
    note: str  # the checkpoint as cosigned (with the witness's signature line)


class WitnessState:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, Cosigned]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"witness state {self.path} is unreadable: {exc}; restore it from a backup "
                              "(starting empty would let a log roll back)") from exc
        return {origin: Cosigned(int(v["size"]), base64.b64decode(v["root"]), str(v["note"]))
                for origin, v in doc.items()}

    def _save(self, state: dict[str, Cosigned]) -> None:
        doc = {o: {"size": c.size, "root": base64.b64encode(c.root).decode(), "note": c.note}
               for o, c in sorted(state.items())}
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def locked(self) -> Iterator[dict[str, Cosigned]]:
        """The state to check and change; saved on exit if it changed."""
        with self._lock, open(self.path.with_suffix(".lock"), "a") as lock_fh:
            fcntl.flock(lock_fh.fileno(), fcntl.LOCK_EX)
            state = self.load()
            before = dict(state)
            yield state
            if state != before:
                self._save(state)
