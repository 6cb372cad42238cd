"""Rigorous bounds over a box; every method encloses the exact (rational) pre-activations.

* :mod:`~equivcheck.bounds.interval`: rounding allowances, :class:`LayerBounds`, interval bounds;
* :mod:`~equivcheck.bounds.symbolic`: CROWN-style back-substitution;
* :mod:`~equivcheck.bounds.lp`: the one HiGHS wrapper, the triangle relaxation, LP bounds
  certified from duals;
* :mod:`~equivcheck.bounds.methods`: the bound methods by name (``sound_bounds``, ``bounds_pair``);
* :mod:`~equivcheck.bounds.difference`: bounds of the unit-wise difference of two networks;
* :mod:`~equivcheck.bounds.stability` (with ``stability_report``, ``stability_state``,
  ``stability_exact``): the exact stability analysis of every ReLU unit.
"""
