"""Campaigns: many checks at once, on this machine or a Dask cluster, and one hard check spread
over a cluster.

* :func:`~equivcheck.campaign.instances.read_instances`: a CSV of instances, checked row by row
  before any work;
* :func:`~equivcheck.campaign.runner.run_campaign`: run them (each in a child process under its
  hard limit), streaming one JSON record per finished instance, resumable;
* :func:`~equivcheck.campaign.html.write_report`: the HTML summary;
* :func:`~equivcheck.campaign.distributed.prove_distributed`: one check whose branch-and-bound
  parts run as Dask tasks.

Layer: a feature, beside compress, audit and regions (it imports solve and below).
"""
