"""Importer handlers for convolutional and DAG-shaped graphs, lowered exactly to the chain of
affine+ReLU layers.

* Conv (1-D, 2-D, N-D; strides, pads, auto_pad, dilations, group), Pad (constant, edge, reflect,
  wrap), AveragePool, GlobalAveragePool and Concat are linear: sparse maps composed into the
  pending map (memory linear in their stored entries).
* Piecewise linear activations close layers: LeakyRelu/PRelu ``relu(x) - a*relu(-x)``,
  Clip ``lo + relu(x - lo) - relu(x - hi)``, MaxPool/GlobalMaxPool a tree of
  ``max(a, b) = b + relu(a - b)`` (one layer per level).
* Add and Sub of two data tensors (a skip connection) and Concat of data tensors: the operands
  are maps of the same anchor, stacked and combined exactly.

Every handler refuses what it does not import with one line naming the file and node.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np

from equivcheck.core.network import MAX_ABS_WEIGHT, MAX_WIDTH
from equivcheck.errors import ModelValueError, ShapeMismatchError, UnsupportedModelError
from equivcheck.io.onnx_affine import DataPath, MapKind, PendingMap
from equivcheck.io.onnx_ops import _op, relu
from equivcheck.io.onnx_proto import pb2
from equivcheck.io.onnx_sparse import MAX_PRODUCT_TERMS, csr_from_coo, exact_vstack
from equivcheck.io.onnx_windows import out_size, pad_sources, same_pads, window_table

# operators whose output is non-negative when their input is (handlers of activations set the
# sign themselves); after any other operator the data is taken as signed
SIGN_KEEPING_OPS = frozenset({
    "Identity", "Dropout", "Cast", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose",
    "Pad", "AveragePool", "GlobalAveragePool", "MaxPool", "GlobalMaxPool", "Relu", "Clip",
    "LeakyRelu", "PRelu",
})


def _str_attr(path: DataPath, node, name: str, default: str) -> str:
    """A string attribute of ``node`` (``default`` when absent)."""
    for a in node.attribute:
        if a.name == name:
            if a.type != pb2().AttributeProto.STRING:
                raise ModelValueError(f"{path.where(node)}: attribute {name} is not a string")
            return a.s.decode("utf-8", "replace")
    return default


def check_width(path: DataPath, node, n: int, shape) -> None:
    if n > MAX_WIDTH:
        raise UnsupportedModelError(
            f"{path.where(node)}: the data would have {n:,} values (shape {tuple(shape)}); "
            f"equivcheck handles widths up to {MAX_WIDTH:,}"
        )


def _spatial(path: DataPath, node) -> tuple[int, tuple[int, ...]]:
    """Channels and spatial sizes of (1, C, *spatial) data."""
    s = path.shape
    if len(s) < 3 or s[0] != 1:
        raise UnsupportedModelError(
            f"{path.where(node)}: {node.op_type} needs data of shape (1, C, *spatial), got {s}"
        )
    return s[1], tuple(s[2:])


@dataclasses.dataclass(frozen=True)
class Window:
    """A sliding window's geometry over the spatial dimensions."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    begins: tuple[int, ...]
    ends: tuple[int, ...]
    dils: tuple[int, ...]
    outs: tuple[int, ...]


def _window(path: DataPath, node, sizes, kernel, ceil: bool = False) -> Window:
    """The window of a Conv or pooling node: strides, pads (or auto_pad), dilations, output
    sizes; refuses bad values and an empty output."""
    where, attr, d = path.where(node), path.ctx.attr, len(sizes)
    strides = attr(node, "strides", [1] * d, "ints")
    dils = attr(node, "dilations", [1] * d, "ints")
    pads = attr(node, "pads", [0] * (2 * d), "ints")
    if len(strides) != d or len(dils) != d or len(pads) != 2 * d or len(kernel) != d:
        raise ShapeMismatchError(
            f"{where}: kernel {list(kernel)}, strides {strides}, dilations {dils} or pads {pads} "
            f"do not fit {d} spatial dimensions"
        )
    if min(strides + dils + list(kernel)) < 1 or min(pads) < 0:
        raise ModelValueError(f"{where}: kernel, strides and dilations must be positive, pads not negative")
    auto = _str_attr(path, node, "auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if max(dils) > 1:
            raise UnsupportedModelError(
                f"{where}: auto_pad {auto} with dilations {dils} is not supported "
                "(onnxruntime refuses it too)"
            )
        both = [same_pads(sizes[i], kernel[i], strides[i], dils[i], auto == "SAME_UPPER") for i in range(d)]
        pads = [b for b, _ in both] + [e for _, e in both]
    elif auto == "VALID":
        pads = [0] * (2 * d)
    elif auto != "NOTSET":
        raise UnsupportedModelError(f"{where}: auto_pad {auto!r} is not supported")
    begins, ends = tuple(pads[:d]), tuple(pads[d:])
    outs = []
    for i in range(d):
        o = out_size(sizes[i], kernel[i], strides[i], begins[i] + ends[i], dils[i], ceil)
        if ceil and o > 0 and (o - 1) * strides[i] >= sizes[i] + begins[i]:
            o -= 1  # the last window would start in the end padding
        outs.append(o)
    if min(outs) < 1:
        raise ShapeMismatchError(f"{where}: the window does not fit data of spatial size {tuple(sizes)}")
    return Window(tuple(kernel), tuple(strides), begins, ends, tuple(dils), tuple(outs))


def _table(path: DataPath, node, w: Window, sizes, copies: int = 1) -> np.ndarray:
    """The window table (:func:`~equivcheck.io.onnx_windows.window_table`), refused before it is
    built when ``copies`` of it (one per channel) would hold more than ``MAX_PRODUCT_TERMS``
    entries."""
    size = math.prod(w.outs) * math.prod(w.kernel) * copies
    if size > MAX_PRODUCT_TERMS:
        raise UnsupportedModelError(
            f"{path.where(node)}: {math.prod(w.outs):,} windows of {math.prod(w.kernel):,} values "
            f"are too many (equivcheck handles up to {MAX_PRODUCT_TERMS:,})"
        )
    return window_table(sizes, w.kernel, w.strides, w.begins, w.dils, w.outs)


# -- linear maps ---------------------------------------------------------------------------------
@_op("Conv", min_inputs=2)
def conv(path: DataPath, node) -> None:
    where = path.where(node)
    channels, sizes = _spatial(path, node)
    weight = np.asarray(path.typed_const(node, node.input[1]), dtype=np.float64)
    if weight.ndim != len(path.shape):
        raise ShapeMismatchError(f"{where}: weight of shape {weight.shape} for data of shape {path.shape}")
    group = path.ctx.attr(node, "group", 1)
    m, cg = weight.shape[0], weight.shape[1]
    if group < 1 or channels % group or m % group or cg * group != channels:
        raise ShapeMismatchError(
            f"{where}: weight of shape {weight.shape} with group {group} does not fit {channels} channels"
        )
    kernel = path.ctx.attr(node, "kernel_shape", list(weight.shape[2:]), "ints")
    if tuple(kernel) != weight.shape[2:]:
        raise ShapeMismatchError(f"{where}: kernel_shape {kernel} but the weight has shape {weight.shape}")
    w = _window(path, node, sizes, kernel)
    p, k, s = math.prod(w.outs), math.prod(kernel), math.prod(sizes)
    check_width(path, node, m * p, (1, m) + w.outs)
    if m * cg * p * k > MAX_PRODUCT_TERMS:
        raise UnsupportedModelError(
            f"{where}: the convolution has {m * cg * p * k:,} weights once unrolled "
            f"(equivcheck handles up to {MAX_PRODUCT_TERMS:,} per layer)"
        )
    bias = None
    if len(node.input) > 2 and node.input[2]:
        b = np.asarray(path.typed_const(node, node.input[2]), dtype=np.float64)
        if b.shape != (m,):
            raise ShapeMismatchError(f"{where}: bias of shape {b.shape}, expected ({m},)")
        bias = np.repeat(b, p)
    table = _table(path, node, w, sizes)  # (P, K)
    mi = np.arange(m)[:, None, None, None]
    ci = np.arange(cg)[None, :, None, None]
    cin = (mi // (m // group)) * cg + ci
    pos = table[None, None, :, :]
    valid = np.broadcast_to(pos >= 0, (m, cg, p, k))
    rows = np.broadcast_to(mi * p + np.arange(p)[None, None, :, None], valid.shape)[valid]
    cols = np.broadcast_to(cin * s + pos, valid.shape)[valid]
    vals = np.broadcast_to(weight.reshape(m, cg, 1, k), valid.shape)[valid]
    lin, _ = csr_from_coo(rows, cols, vals, (m * p, channels * s))
    path.apply_sparse(node, lin, None, bias)
    path.shape = (1, m) + w.outs


def _average(path: DataPath, node, w: Window, sizes, include_pad: bool) -> None:
    """data <- the average of each window, per channel (exact 1/count)."""
    channels = path.shape[1]
    table = _table(path, node, w, sizes, channels)
    p, k, s = table.shape[0], table.shape[1], math.prod(sizes)
    counts = (table >= 0).sum(axis=1)
    if np.any(counts == 0):
        raise UnsupportedModelError(f"{path.where(node)}: a pooling window lies entirely in the padding")
    div = np.full(p, k) if include_pad else counts
    valid = np.broadcast_to(table >= 0, (channels, p, k))
    ch = np.arange(channels)[:, None, None]
    rows = np.broadcast_to(ch * p + np.arange(p)[None, :, None], valid.shape)[valid]
    cols = np.broadcast_to(ch * s + table[None], valid.shape)[valid]
    dv = np.broadcast_to(div[None, :, None], valid.shape)[valid]
    q = None
    if np.any(dv & (dv - 1)):  # a divisor that is not a power of two: 1/d is not a float
        uniq, inv = np.unique(dv, return_inverse=True)
        fr = np.empty(len(uniq), dtype=object)
        fr[:] = [Fraction(1, int(d)) for d in uniq]
        q = fr[inv]
    lin, lin_q = csr_from_coo(rows, cols, 1.0 / dv, (channels * p, channels * s), q=q)
    path.apply_sparse(node, lin, lin_q, None)
    path.shape = (1, channels) + w.outs


def _pool_window(path: DataPath, node, sizes) -> Window:
    kernel = path.ctx.attr(node, "kernel_shape", None, "ints")
    if kernel is None:
        raise ShapeMismatchError(f"{path.where(node)}: {node.op_type} without kernel_shape")
    ceil = bool(path.ctx.attr(node, "ceil_mode", 0))
    w = _window(path, node, sizes, kernel, ceil)
    if ceil and node.op_type == "AveragePool" and w != _window(path, node, sizes, kernel, False):
        raise UnsupportedModelError(
            f"{path.where(node)}: AveragePool with ceil_mode and a partial last window is not supported"
        )
    return w


@_op("AveragePool")
def average_pool(path: DataPath, node) -> None:
    _, sizes = _spatial(path, node)
    w = _pool_window(path, node, sizes)
    check_width(path, node, path.shape[1] * math.prod(w.outs), w.outs)
    _average(path, node, w, sizes, bool(path.ctx.attr(node, "count_include_pad", 0)))


@_op("GlobalAveragePool")
def global_average_pool(path: DataPath, node) -> None:
    _, sizes = _spatial(path, node)
    d = len(sizes)
    w = Window(sizes, (1,) * d, (0,) * d, (0,) * d, (1,) * d, (1,) * d)
    _average(path, node, w, sizes, True)


@_op("Pad")
def pad(path: DataPath, node) -> None:
    where, s = path.where(node), path.shape
    mode = _str_attr(path, node, "mode", "constant")
    if mode not in ("constant", "edge", "reflect", "wrap"):
        raise UnsupportedModelError(f"{where}: Pad mode {mode!r} is not supported")
    if len(node.input) > 1 and node.input[1]:
        pads = [int(v) for v in path.ctx.const(node, node.input[1]).ravel()]
    else:
        pads = path.ctx.attr(node, "pads", None, "ints")
        if pads is None:
            raise ShapeMismatchError(f"{where}: Pad without pads")
    value = float(path.ctx.attr(node, "value", 0.0))
    if len(node.input) > 2 and node.input[2]:
        cv = path.typed_const(node, node.input[2])
        value = float(cv.ravel()[0]) if cv.size else 0.0
    axes = list(range(len(s)))
    if len(node.input) > 3 and node.input[3]:
        axes = [int(a) % len(s) for a in path.ctx.const(node, node.input[3]).ravel()]
    if len(pads) != 2 * len(axes):
        raise ShapeMismatchError(f"{where}: {len(pads)} pads for {len(axes)} axes of data of shape {s}")
    begins, ends = [0] * len(s), [0] * len(s)
    for i, a in enumerate(axes):
        begins[a], ends[a] = pads[i], pads[len(axes) + i]
    out = tuple(n + b + e for n, b, e in zip(s, begins, ends))
    if min(out, default=1) < 0 or (mode != "constant" and any(b > n - (mode == "reflect") or e > n - (mode == "reflect")
                                                              for n, b, e in zip(s, begins, ends))):
        raise ShapeMismatchError(f"{where}: pads {pads} do not fit data of shape {s} in mode {mode}")
    check_width(path, node, max(math.prod(out), *out), out)
    src = pad_sources(s, begins, ends, mode)
    fill = np.full(len(src), value) if (mode == "constant" and value != 0.0) else None
    path.select(node, src, fill)
    path.shape = out
    if mode == "constant" and value < 0 and np.any(src < 0):
        path.nonneg = False


# -- piecewise linear activations ----------------------------------------------------------------
def sparse_eye(n: int, scale=1.0):
    """``scale`` times the n x n identity, sparse."""
    return csr_from_coo(np.arange(n), np.arange(n), np.broadcast_to(np.asarray(scale, np.float64), (n,)), (n, n))[0]


def _piecewise(path: DataPath, node, pre, pre_shift, post, post_shift, name: str | None = None) -> None:
    """Close one layer (named ``name``, default the node) whose units are
    ``relu(pre @ x + pre_shift)``; the data becomes ``post @ units + post_shift``."""
    rows = dataclasses.replace(path.pending)
    rows.then_sparse(pre, None, pre_shift, path.where(node))
    path.close_layer(relu=True, name=name or node.name or node.output[0], rows=rows)
    path.apply_sparse(node, post, None, post_shift)


def sparse_vstack(*mats):
    """Float sparse matrices stacked row-wise."""
    return exact_vstack([(m, None) for m in mats])[0]


def sparse_hstack(*mats):
    """Float sparse matrices side by side."""
    return sparse_vstack(*[m.T for m in mats]).T.tocsr()


@_op("LeakyRelu")
def leaky_relu(path: DataPath, node) -> None:
    alpha = float(path.ctx.attr(node, "alpha", 0.01))
    _leaky(path, node, np.full(math.prod(path.shape), alpha))


@_op("PRelu", min_inputs=2)
def prelu(path: DataPath, node) -> None:
    slope = np.asarray(path.typed_const(node, node.input[1]), dtype=np.float64)
    try:
        full = np.broadcast_to(slope, path.shape)
    except ValueError:
        raise ShapeMismatchError(
            f"{path.where(node)}: slope of shape {slope.shape} does not broadcast to data shape {path.shape}"
        ) from None
    _leaky(path, node, full.ravel())


def _leaky(path: DataPath, node, alpha: np.ndarray) -> None:
    """x -> relu(x) - alpha * relu(-x)."""
    if path.nonneg:
        return  # x >= 0: the output is x
    if not np.any(alpha):
        relu(path, node)
        return
    n = len(alpha)
    identity = sparse_eye(n)
    scaled = csr_from_coo(np.arange(n), np.arange(n), -alpha, (n, n))[0]
    _piecewise(path, node, sparse_vstack(identity, sparse_eye(n, -1.0)), None,
               sparse_hstack(identity, scaled), None)
    path.nonneg = False


def _clip_bound(path: DataPath, node, k: int, attr_name: str) -> float | None:
    """Clip's lower (k=1) or upper (k=2) bound, None when absent or beyond ``MAX_ABS_WEIGHT``."""
    value = None
    if len(node.input) > k and node.input[k]:
        name = node.input[k]
        if name not in path.ctx.consts:
            path.ctx.const(node, name)  # raises: not a constant
        c = np.asarray(path.ctx.consts[name])
        if c.size != 1:
            raise ShapeMismatchError(f"{path.where(node)}: Clip bound '{name}' is not a scalar")
        value = float(c.ravel()[0])
        if math.isnan(value):
            raise ModelValueError(f"{path.where(node)}: Clip bound '{name}' is nan")
    else:
        value = path.ctx.attr(node, attr_name, None, "float")
    if value is None or abs(value) > MAX_ABS_WEIGHT:
        if value is not None:
            path.notes.append(f"Clip '{node.name or node.output[0]}': the bound {value:g} is beyond "
                              f"{MAX_ABS_WEIGHT:g} and was treated as absent")
        return None
    return value


@_op("Clip")
def clip(path: DataPath, node) -> None:
    lo, hi = _clip_bound(path, node, 1, "min"), _clip_bound(path, node, 2, "max")
    n = math.prod(path.shape)
    if lo is not None and hi is not None and lo > hi and len(node.input) == 1:
        raise ModelValueError(f"{path.where(node)}: min {lo:g} is above max {hi:g} (onnxruntime refuses it)")
    if lo is not None and hi is not None and lo > hi:  # opset 11 on: the output is max
        path.pending = PendingMap(n=path.pending.n, kind=MapKind.SPARSE,
                                  w=csr_from_coo(np.arange(n), np.full(n, path.pending.n), np.full(n, hi),
                                                 (n, path.pending.n + 1))[0])
        path.nonneg = hi >= 0
        return
    identity = sparse_eye(n)
    if lo is None and hi is None:
        return
    if hi is None and lo == 0.0:
        relu(path, node)
    elif hi is None:  # lo + relu(x - lo)
        _piecewise(path, node, identity, np.full(n, -lo), identity, np.full(n, lo))
    elif lo is None:  # hi - relu(hi - x)
        _piecewise(path, node, sparse_eye(n, -1.0), np.full(n, hi), sparse_eye(n, -1.0), np.full(n, hi))
    else:  # lo + relu(x - lo) - relu(x - hi)
        _piecewise(path, node, sparse_vstack(identity, identity), np.r_[np.full(n, -lo), np.full(n, -hi)],
                   sparse_hstack(identity, sparse_eye(n, -1.0)), np.full(n, lo) if lo != 0.0 else None)
    path.nonneg = lo is not None and lo >= 0


@_op("MaxPool")
def max_pool(path: DataPath, node) -> None:
    if len(node.output) > 1 and node.output[1]:
        raise UnsupportedModelError(f"{path.where(node)}: MaxPool's Indices output is not supported")
    _, sizes = _spatial(path, node)
    w = _pool_window(path, node, sizes)
    _max(path, node, w, sizes)


@_op("GlobalMaxPool")
def global_max_pool(path: DataPath, node) -> None:
    _, sizes = _spatial(path, node)
    d = len(sizes)
    _max(path, node, Window(sizes, (1,) * d, (0,) * d, (0,) * d, (1,) * d, (1,) * d), sizes)


def _max(path: DataPath, node, w: Window, sizes) -> None:
    """data <- the maximum of each window, per channel: a tree of layers
    ``max(a, b) = b + relu(a - b)``."""
    channels = path.shape[1]
    check_width(path, node, channels * math.prod(w.outs), w.outs)
    table = _table(path, node, w, sizes, channels)
    p, s = table.shape[0], math.prod(sizes)
    if np.any((table >= 0).sum(axis=1) == 0):
        raise UnsupportedModelError(f"{path.where(node)}: a pooling window lies entirely in the padding")
    table = np.take_along_axis(table, np.argsort(table < 0, axis=1, kind="stable"), axis=1)
    ch = np.arange(channels)[:, None, None]
    cands = np.where(table[None] >= 0, ch * s + table[None], -1).reshape(channels * p, -1)
    name = node.name or node.output[0]
    level = 0
    while cands.shape[1] > 1:
        cands = _max_level(path, node, cands, f"{name}/max{level}")
        level += 1
    path.select(node, cands[:, 0])
    path.shape = (1, channels) + w.outs


def _max_level(path: DataPath, node, cands: np.ndarray, name: str) -> np.ndarray:
    """One level of the max tree: candidates paired, each pair ``(a, b)`` becoming
    ``b + relu(a - b)``; returns the next level's candidates (rows of the new data)."""
    half = (cands.shape[1] + 1) // 2
    a = cands[:, 0::2]
    b = np.full_like(a, -1)
    b[:, :cands[:, 1::2].shape[1]] = cands[:, 1::2]
    slots = a >= 0
    new_idx = np.full(a.shape, -1, dtype=np.int64)
    new_idx[slots] = np.arange(int(slots.sum()))
    pair = slots & (b >= 0)
    n_pairs, n_slots = int(pair.sum()), int(slots.sum())
    carried = np.where(pair, b, a)[slots]  # the value each slot keeps: b of a pair, a of a single
    signed = not path.nonneg
    m = path.pending.out_dim
    # units: [a - b for pairs] + [carried] (+ [-carried] when signed)
    pr = np.arange(n_pairs)
    rows = [pr, pr, n_pairs + np.arange(n_slots)]
    cols = [a[pair], b[pair], carried]
    vals = [np.ones(n_pairs), -np.ones(n_pairs), np.ones(n_slots)]
    if signed:
        rows.append(n_pairs + n_slots + np.arange(n_slots))
        cols.append(carried)
        vals.append(-np.ones(n_slots))
    n_units = n_pairs + n_slots * (2 if signed else 1)
    pre = csr_from_coo(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), (n_units, m))[0]
    slot_of_pair = new_idx[pair]
    prow = [slot_of_pair, np.arange(n_slots)]
    pcol = [pr, n_pairs + np.arange(n_slots)]
    pval = [np.ones(n_pairs), np.ones(n_slots)]
    if signed:
        prow.append(np.arange(n_slots))
        pcol.append(n_pairs + n_slots + np.arange(n_slots))
        pval.append(-np.ones(n_slots))
    post = csr_from_coo(np.concatenate(prow), np.concatenate(pcol), np.concatenate(pval), (n_slots, n_units))[0]
    nonneg = path.nonneg
    _piecewise(path, node, pre, None, post, None, name)
    path.nonneg = nonneg
    return new_idx[:, :half]
