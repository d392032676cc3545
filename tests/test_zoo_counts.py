"""The stored parameter counts (segarch/zoo/parameter_counts.json) equal a fresh count of every architecture."""

from __future__ import annotations

import dataclasses

import pytest

from segarch import zoo
from segarch.zoo import registry
from segarch.zoo.counts import stored_count


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.names())
def test_the_stored_count_is_the_networks_count_at_the_paper_configuration(name):
    entry = zoo.card(name)
    stored = stored_count(entry)
    assert stored is not None, f"{name}: no up-to-date stored count; run `python scripts/update_zoo_counts.py`"
    assert stored == registry._count(name, entry.paper_config), \
        f"{name}: the stored count is stale; run `python scripts/update_zoo_counts.py`"


def test_a_changed_configuration_is_counted_again_not_read_from_the_file():
    entry = zoo.card("unet")
    changed = dataclasses.replace(entry, paper_config={**entry.paper_config, "features": (8, 16, 32)})
    assert stored_count(entry) is not None and stored_count(changed) is None
