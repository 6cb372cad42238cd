"""Campaigns: many checks at once, on this machine or a Dask cluster, and one hard check spread
over a cluster.

* :func:`~equivcheck.campaign.instances.read_instances`: a CSV of instances, checked row by row
  before any work;
* :func:`~equivcheck.campaign.runner.run_campaign`: run them (each in a child process under its
  hard limit), streaming one JSON record per finished instance, resumable;
* :func:`~equivcheck.campaign.html.write_report`: the HTML summary;
* :func:`~equivcheck.campaign.distributed.prove_distributed`: one check whose branch and bound
  is farmed out as Dask tasks (:func:`~equivcheck.campaign.farm.farm`: a queue of exact parts,
  open work handed back to idle workers);
* :func:`~equivcheck.campaign.malloc.tune_malloc`: the allocator settings every check's
  process runs with (a Dask nanny's made instances 2x slower).

Layer: a feature, beside compress, audit and regions (it imports solve and below).
"""
