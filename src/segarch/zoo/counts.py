"""Parameter counts of the zoo at each paper's configuration, stored so listing the zoo is quick.

Counting builds every network on PyTorch's ``meta`` device: about 8 s for the whole zoo on a shared
2-core machine, which ``segarch zoo`` and the Model zoo dock would pay on every call. The counts are
stored in ``parameter_counts.json`` beside the registry, each under a key that hashes the card's paper
configuration and the source of the module defining the network: a stored count is used only while
both are unchanged, otherwise the network is counted again. A test recounts every architecture and
compares; ``python scripts/update_zoo_counts.py`` rewrites the file.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from functools import lru_cache
from pathlib import Path

from segarch.zoo.card import ModelCard

__all__ = ["stored_count", "card_key", "write_counts", "COUNTS_FILE"]

COUNTS_FILE = Path(__file__).resolve().parent / "parameter_counts.json"


def card_key(entry: ModelCard) -> str:
    """What a stored count depends on: the paper configuration and the network's source file."""
    digest = hashlib.sha256(entry.name.encode())
    digest.update(json.dumps(dict(entry.paper_config), sort_keys=True, default=str).encode())
    try:
        digest.update(Path(inspect.getsourcefile(entry.builder)).read_bytes())
    except (TypeError, OSError):  # no source to hash: never trust a stored count
        return ""
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def _stored() -> dict:
    try:
        return json.loads(COUNTS_FILE.read_text())
    except (OSError, ValueError):
        return {}


def stored_count(entry: ModelCard) -> int | None:
    """The stored count of ``entry`` at its paper configuration, or ``None`` when missing or out of date."""
    row = _stored().get(entry.name)
    key = card_key(entry)
    if isinstance(row, dict) and key and row.get("key") == key and isinstance(row.get("params"), int):
        return row["params"]
    return None


def write_counts(counts: list[tuple[ModelCard, int]], path: Path = COUNTS_FILE) -> dict:
    """Store fresh ``counts`` (pairs of a card and its parameters at its paper configuration); returns
    what was written."""
    rows = {entry.name: {"key": card_key(entry), "params": int(n)} for entry, n in counts}
    path.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    _stored.cache_clear()
    return rows
