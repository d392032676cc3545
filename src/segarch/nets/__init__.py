"""The zoo's architectures, one module per architecture.

Importing a module registers its architectures; :mod:`segarch.zoo` imports them all on first use.
"""

from segarch.nets._heads import HEAD_KINDS, Head, MultiHeadNet, check_single_output

__all__ = ["Head", "MultiHeadNet", "HEAD_KINDS", "check_single_output"]
