"""Read Stripe events from export files: one event per file, a JSON array, JSON lines, or the
``{"object": "list", "data": [...]}`` page that ``stripe events list`` prints. A folder is read
file by file (``*.json``, ``*.jsonl``, ``*.ndjson``), in name order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".json", ".jsonl", ".ndjson")


class EventFileError(ValueError):
    """A file that is not one of the accepted shapes (the reason says where and why)."""


@dataclass
class FileEvents:
    path: Path
    shape: str  # event | array | list | lines
    events: list


def _from_doc(doc, path: Path) -> tuple[str, list]:
    if isinstance(doc, list):
        return "array", doc
    if isinstance(doc, dict) and doc.get("object") == "list" and isinstance(doc.get("data"), list):
        return "list", doc["data"]
    if isinstance(doc, dict):
        return "event", [doc]
    raise EventFileError(f"{path}: top-level JSON is neither an event, an array nor a list page")


def read_event_file(path: Path) -> FileEvents:
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return FileEvents(path, "empty", [])
    try:
        shape, events = _from_doc(json.loads(text), path)
        return FileEvents(path, shape, events)
    except json.JSONDecodeError:
        pass
    events = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EventFileError(f"{path}:{n}: not JSON and not JSON lines ({exc.msg})") from None
        events.extend(_from_doc(doc, path)[1])
    return FileEvents(path, "lines", events)


def iter_event_files(paths: list[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
        elif p.exists():
            yield p
        else:
            raise EventFileError(f"{p}: no such file or folder")
