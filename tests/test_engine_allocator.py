"""engine.allocator: glibc's thresholds are set once per process, and only when the user has not
tuned the allocator; the bounds do not depend on it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from equivcheck.engine import allocator

GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")

PROBE = (
    "import numpy as np\n"
    "from equivcheck.engine.allocator import tune\n"
    "from equivcheck.engine import Boxes, PairModel, pair_bounds\n"
    "from equivcheck.core.network import Affine, Layer, Network\n"
    "rng = np.random.default_rng(3)\n"
    "ws = [rng.standard_normal((40, 3)), rng.standard_normal((40, 40)), rng.standard_normal((2, 40))]\n"
    "bs = [rng.standard_normal(40), rng.standard_normal(40), rng.standard_normal(2)]\n"
    "def net(ws, bs):\n"
    "    return Network(tuple(Layer(Affine(w, b), i < 2) for i, (w, b) in enumerate(zip(ws, bs))))\n"
    "f = net(ws, bs)\n"
    "g = net([w.astype(np.float16).astype(float) for w in ws], bs)\n"
    "m = PairModel.build(f, g)\n"
    "lo = -rng.random((300, 3)); hi = rng.random((300, 3))\n"
    "pb = pair_bounds(m, Boxes(lo, hi, m.width), 'all')\n"
    "print(tune(), repr(pb.d_hi.tobytes().hex()))\n"
)


def _probe(**env) -> tuple[str, str]:
    full = {**os.environ, **env}
    for key in ("EQUIVCHECK_MALLOPT", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        if key not in env:
            full.pop(key, None)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=full,
                         check=True, timeout=120).stdout.split()
    return out[0], out[1]


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_thresholds_are_set_on_glibc_and_the_bounds_do_not_change():
    tuned, bounds = _probe()
    assert tuned == "True"
    off, same = _probe(EQUIVCHECK_MALLOPT="0")
    assert off == "False"
    assert same == bounds  # bit for bit


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "1000000"},
                                 {"MALLOC_MMAP_THRESHOLD_": "1000000"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}])
def test_a_user_tuned_allocator_is_left_alone(env):
    assert _probe(**env)[0] == "False"


def test_tune_answers_the_same_every_time_and_never_raises():
    first = allocator.tune()
    assert isinstance(first, bool)
    assert allocator.tune() is first
    if not GLIBC:
        assert first is False
