"""Count every zoo architecture afresh (on the meta device) and store the counts for ``segarch zoo``.

Run after changing a network or its card: ``python scripts/update_zoo_counts.py``
(``tests/test_zoo_counts.py`` fails while a stored count is stale).
"""

from __future__ import annotations

import torch

from segarch import zoo
from segarch.zoo.counts import COUNTS_FILE, write_counts


def fresh_count(entry: zoo.ModelCard) -> int:
    with torch.device("meta"):
        net = zoo.create(entry.name, **dict(entry.paper_config))
    return sum(p.numel() for p in net.parameters())


if __name__ == "__main__":
    rows = write_counts([(entry, fresh_count(entry)) for entry in zoo.cards()])
    print(f"wrote {len(rows)} counts to {COUNTS_FILE}")
