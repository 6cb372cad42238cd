"""The audit's witness search: inputs of a box that deviate a lot, by the shared signed-gradient
ascent of :mod:`equivcheck.core.ascent`. Candidates only: the auditor evaluates them exactly."""

from __future__ import annotations

import numpy as np

from equivcheck.core.ascent import Schedule, ascend, difference_objective
from equivcheck.core.deadline import Deadline
from equivcheck.core.domain import Box
from equivcheck.core.exact import snap
from equivcheck.core.network import Network

_SCHEDULE = Schedule(step=0.25, scales=(1.0, 0.3, 0.1), min_step=1e-6)


def search_witnesses(f: Network, g: Network, box: Box, deadline: Deadline, seed: int = 0,
                     starts: int = 4, samples: int = 512) -> np.ndarray:
    """Candidate points of ``box`` (float32-representable, or float64 where the box holds no
    float32 point) that maximise ``|f_j - g_j|``, one per output j (rows), by signed-gradient
    ascent from the best random samples until ``deadline``; none when the box holds no float
    point at all. Candidates only: callers evaluate them exactly."""
    got = box.sample_box()
    if got is None:
        return np.zeros((0, box.dim))
    (lo, hi), precision = got

    def project(x: np.ndarray) -> np.ndarray:
        return snap(x, lo, hi, precision)

    rng = np.random.default_rng(seed)
    m = f.out_dim
    n = max(samples, 2 * m * starts)
    x0 = project(np.vstack([(lo + hi) / 2, lo + rng.random((n, len(lo))) * (hi - lo)]))
    d0 = f.evaluate(x0) - g.evaluate(x0)
    # objectives: (output j, sign s) maximise s * (f_j - g_j); `starts` best samples each
    pts, cs = [], []
    for j in range(m):
        for s in (1.0, -1.0):
            best = np.argsort(-s * d0[:, j])[:starts]
            pts.append(x0[best])
            c = np.zeros((len(best), m))
            c[:, j] = s
            cs.append(c)
    c = np.vstack(cs)
    x, val = ascend(difference_objective(f, g, c), np.vstack(pts), project, hi - lo, deadline,
                    _SCHEDULE)
    # best point per output
    out = []
    jj = np.argmax(np.abs(c), axis=1)
    for j in range(m):
        rows = np.where(jj == j)[0]
        out.append(x[rows[np.argmax(val[rows])]])
    return np.array(out)
