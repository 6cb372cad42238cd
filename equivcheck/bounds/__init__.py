"""Rigorous bounds over a box: interval, symbolic (CROWN-style) and LP bounds of one network,
difference bounds of a pair, and the exact stability analysis of single units."""
