"""The model zoo: every architecture built by name from one registry.

Examples::

    >>> from segarch import zoo
    >>> zoo.names(task="semantic")[:2]
    ['attention_unet', 'unet']
    >>> net = zoo.create("unet", spatial_dims=3, in_channels=1, out_channels=3, features=(8, 16, 32, 64, 128))
"""

from segarch.zoo.card import TASKS, ModelCard
from segarch.zoo.registry import card, cards, create, names, parameter_count, register

__all__ = ["TASKS", "ModelCard", "card", "cards", "create", "names", "parameter_count", "register"]
