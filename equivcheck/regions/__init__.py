"""Linear regions: Serra et al.'s upper bounds and exact counting on small networks."""
