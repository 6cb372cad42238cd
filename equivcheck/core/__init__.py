"""The data everything else works on: networks, specs, domains, results, the deadline, and exact
rational helpers. Imports nothing of equivcheck above :mod:`equivcheck.errors`."""
