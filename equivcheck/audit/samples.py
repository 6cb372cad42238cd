"""The audit's statistics on concrete inputs: random points of the domain and the user's data,
evaluated in numpy float64 (not certified: the certified bound covers every input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from equivcheck.audit.results import SampleStats
from equivcheck.core.domain import Domain
from equivcheck.core.exact import snap
from equivcheck.core.network import Network
from equivcheck.errors import InputError, ShapeMismatchError


def read_inputs(data: Any, in_dim: int) -> np.ndarray:
    """``data`` (a .npy path or an array of any shape whose size is a multiple of ``in_dim``)
    as float64 rows of ``in_dim`` values; :class:`InputError` when it is missing, unreadable,
    not numbers, of the wrong size, or holds NaN or infinities."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise InputError(f"{path}: no such data file")
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - numpy raises several types for bad files
            raise InputError(f"{path}: not a readable .npy array ({type(exc).__name__})") from None
        name = str(path)
    else:
        arr, name = np.asarray(data), "data"
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    per_row = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else arr.size
    if arr.size == 0 or per_row != in_dim:
        raise ShapeMismatchError(
            f"{name}: shape {arr.shape} cannot be split into inputs of {in_dim} values "
            f"(expected shape (N, ...) with {in_dim} values per input)"
        )
    arr = arr.reshape(-1, in_dim)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: contains NaN or infinite values")
    return arr


def sample_stats(f: Network, g: Network, x: np.ndarray, domain: Domain, source: str) -> SampleStats:
    """Top-1 agreement and deviation ``||f(x) - g(x)||_inf`` (float64) on the rows of ``x``
    (at least one row); ``inside_domain`` counts the rows that lie in the domain exactly."""
    ya, yb = f.evaluate(x), g.evaluate(x)
    dev = np.max(np.abs(ya - yb), axis=1)
    agree = float(np.mean(np.argmax(ya, axis=1) == np.argmax(yb, axis=1)) * 100.0)
    inside = np.zeros(len(x), dtype=bool)
    for box in domain.boxes:
        got = box.float64_box()  # float64 rows lie in the exact box iff inside these bounds
        if got is not None:
            inside |= np.all((x >= got[0]) & (x <= got[1]), axis=1)
    qs = {f"p{q}": float(np.percentile(dev, q)) for q in (0, 50, 90, 99, 100)}
    top = float(dev.max()) if float(dev.max()) > 0 else 1.0
    counts, edges = np.histogram(dev, bins=30, range=(0.0, top))
    return SampleStats(source, len(x), int(inside.sum()), agree, float(dev.max()), qs,
                       tuple(float(e) for e in edges), tuple(int(c) for c in counts), dev,
                       dev[inside])


def random_domain_points(domain: Domain, n: int, seed: int = 0) -> np.ndarray:
    """``n`` uniform points of the domain (spread over its boxes), float32-representable (or
    float64 in a box holding no float32 point); none from boxes holding no float point."""
    rng = np.random.default_rng(seed)
    rows = []
    per = [n // len(domain.boxes) + (i < n % len(domain.boxes)) for i in range(len(domain.boxes))]
    for box, k in zip(domain.boxes, per):
        got = box.sample_box()
        if got is None or k == 0:
            continue
        (lo, hi), precision = got
        rows.append(snap(lo + rng.random((k, len(lo))) * (hi - lo), lo, hi, precision))
    return np.vstack(rows) if rows else np.zeros((0, domain.dim))
