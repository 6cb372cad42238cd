"""Lossless compression: remove or fold the units that are stable on the domain, and prove the
result equivalent to the original (:func:`compress`)."""

from equivcheck.compress.pipeline import compress
from equivcheck.compress.result import CompressionResult, LayerCompression

__all__ = ["CompressionResult", "LayerCompression", "compress"]
