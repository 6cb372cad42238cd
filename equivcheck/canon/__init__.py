"""A canonical form of ReLU networks on a domain, in exact rational arithmetic (issue 11).

Both networks of a pair are rewritten, exactly and only by function-preserving rules on the
domain, into expressions over one shared table of canonical ReLU units
(:mod:`~equivcheck.canon.table`, :mod:`~equivcheck.canon.build`); equal forms prove the pair
without any search (:mod:`~equivcheck.canon.compare`). Layer: between ``bounds`` and ``solve``.
"""

from equivcheck.canon.build import Rewrites
from equivcheck.canon.compare import CanonResult, canonical_check, canonical_forms

__all__ = ["CanonResult", "Rewrites", "canonical_check", "canonical_forms"]
