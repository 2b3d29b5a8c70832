"""Transformer from Scratch: the package the course notebooks import.

Nothing heavy runs at import: models, tokenizers and activations are built by cached loader functions
the first time a notebook asks for them.
"""

__version__ = "0.2.0"
