"""Former home of ``upsample_to``: now the one resampling helper of :mod:`segarch.blocks.resize`.

Kept as an alias only while :mod:`segarch.nets.dextr` still imports it from here.
"""

from __future__ import annotations

from segarch.blocks.resize import resize_to as upsample_to

__all__ = ["upsample_to"]
