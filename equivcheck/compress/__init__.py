"""Lossless compression: remove or fold the units that are stable on the domain, and prove the
result equivalent to the original (:func:`compress`); a statically quantized model only loses
its dead units (:func:`compress_quantized`)."""

from equivcheck.compress.pipeline import compress
from equivcheck.compress.quantized import QuantizedCompressionResult, compress_quantized
from equivcheck.compress.result import CompressionResult, LayerCompression

__all__ = ["CompressionResult", "LayerCompression", "QuantizedCompressionResult", "compress",
           "compress_quantized"]
