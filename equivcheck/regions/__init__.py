"""Linear regions: Serra et al.'s upper bounds (:mod:`~equivcheck.regions.bounds`) and exact
counting on small networks (:mod:`~equivcheck.regions.counting`, whose exact checks live in
:mod:`~equivcheck.regions.certificates`)."""

from equivcheck.regions.bounds import (
    RefinedBound,
    RegionBounds,
    activation_pattern_bound,
    bounds_for_widths,
    network_bounds,
    parse_widths,
    rank_upper_bound,
    refined_bound,
    scientific,
    shallow_bound,
    theorem1_bound,
)
from equivcheck.regions.counting import CountStatus, Region, RegionCount, count_regions

__all__ = [
    "CountStatus",
    "RefinedBound",
    "Region",
    "RegionBounds",
    "RegionCount",
    "activation_pattern_bound",
    "bounds_for_widths",
    "count_regions",
    "network_bounds",
    "parse_widths",
    "rank_upper_bound",
    "refined_bound",
    "scientific",
    "shallow_bound",
    "theorem1_bound",
]
