"""The zoo's architectures, one module per architecture.

Importing a module registers its architectures; :mod:`segarch.zoo` imports them all on first use.
"""
