"""The lowest tier of the networks: helpers that blocks, backbones and nets share and that import none of them.

:mod:`~segarch.layers.checks` holds the argument checks every architecture uses (``spatial_dims``, channel
lists, choices, positive integers, rates) and :func:`~segarch.layers.checks.padded_shape`.
"""
