"""The bundled Avro schemas.

``privacy_event.avsc`` is the current event schema; ``privacy_event.<n>.avsc`` are its earlier
revisions, still accepted from producers (their fields resolve to the current schema's defaults).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def earlier_event_schemas() -> list[Path]:
    """Earlier revisions of the event schema, oldest first."""
    root = Path(str(resources.files("auditor.schemas")))
    return sorted(root.glob("privacy_event.*.avsc"), key=lambda p: int(p.name.split(".")[1]))
