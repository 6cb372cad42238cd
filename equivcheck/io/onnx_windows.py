"""Index arithmetic for convolution, pooling and padding over N spatial dimensions.

Pure numpy, no ONNX: given sizes, kernel, strides, pads and dilations, which input position
each output position reads. Arrays are linear in (outputs x kernel size), never in
(inputs x outputs).
"""

from __future__ import annotations

import math

import numpy as np


def out_size(size: int, k: int, stride: int, pad_total: int, dil: int, ceil: bool = False) -> int:
    """Output length of a sliding window (ONNX's formula; ``ceil`` for pooling's ceil_mode, where
    a last window must start inside the input or the begin padding)."""
    span = (k - 1) * dil + 1
    num = size + pad_total - span
    if num < 0:
        return 0
    n = (-(-num // stride) if ceil else num // stride) + 1
    return n


def same_pads(size: int, k: int, stride: int, dil: int, upper: bool) -> tuple[int, int]:
    """``(begin, end)`` pads of auto_pad SAME_UPPER (``upper``) or SAME_LOWER."""
    target = -(-size // stride)
    total = max((target - 1) * stride + (k - 1) * dil + 1 - size, 0)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)


def window_table(sizes, kernel, strides, begins, dils, outs) -> np.ndarray:
    """``(P, K)`` int64 array: for output position ``p`` (row-major over ``outs``) and kernel
    offset ``k`` (row-major over ``kernel``), the flat input position read, or -1 when it falls
    in the padding."""
    dims = len(sizes)
    flat = np.zeros([1] * (2 * dims), dtype=np.int64)
    valid = np.ones([1] * (2 * dims), dtype=bool)
    step = 1
    for d in reversed(range(dims)):
        o = np.arange(outs[d])[:, None] * strides[d] - begins[d]
        pos = o + np.arange(kernel[d])[None, :] * dils[d]  # (out_d, k_d)
        shape = [1] * (2 * dims)
        shape[d], shape[dims + d] = outs[d], kernel[d]
        pos = pos.reshape(shape)
        valid = valid & (pos >= 0) & (pos < sizes[d])
        flat = flat + pos * step
        step *= sizes[d]
    out_shape = tuple(outs) + tuple(kernel)
    flat = np.broadcast_to(flat, out_shape)
    valid = np.broadcast_to(valid, out_shape)
    table = np.where(valid, flat, -1)
    return table.reshape(math.prod(outs), math.prod(kernel))


def pad_sources(shape, begins, ends, mode: str) -> np.ndarray:
    """For each position of the padded tensor (row-major), the flat source position in a tensor
    of ``shape``, or -1 for a constant pad. Negative pads crop. ``mode``: constant, edge,
    reflect or wrap."""
    src = np.zeros([1] * len(shape), dtype=np.int64)
    valid = np.ones([1] * len(shape), dtype=bool)
    step = 1
    for d in reversed(range(len(shape))):
        n = shape[d]
        out_n = n + begins[d] + ends[d]
        i = np.arange(out_n) - begins[d]
        ok = (i >= 0) & (i < n)
        if mode == "edge":
            i, ok = np.clip(i, 0, n - 1), np.ones_like(ok)
        elif mode == "reflect":
            period = 2 * (n - 1)
            if period > 0:
                i = np.abs(np.mod(i, period))
                i = np.where(i >= n, period - i, i)
            else:
                i = np.zeros_like(i)
            ok = np.ones_like(ok)
        elif mode == "wrap":
            i, ok = np.mod(i, n), np.ones_like(ok)
        view = [1] * len(shape)
        view[d] = out_n
        src = src + np.where(ok, i, 0).reshape(view) * step
        valid = valid & ok.reshape(view)
        step *= n
    out_shape = tuple(n + b + e for n, b, e in zip(shape, begins, ends))
    return np.where(np.broadcast_to(valid, out_shape), np.broadcast_to(src, out_shape), -1).ravel()
