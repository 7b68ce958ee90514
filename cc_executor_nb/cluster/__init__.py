"""Runs on Dask workers: ``cc_executor_nb.map(..., cluster=client)``.

Needs ``dask[distributed]`` (``pip install cc_executor_nb[dask]``); nothing here is
imported unless a batch is given a cluster.

- :mod:`.worker` runs on each worker: :class:`~.worker.HandlerPlugin` starts an enhanced
  handler there (its own loop thread; loopback for a local cluster, the worker's address
  with TLS when Dask's comms use TLS; a token per cluster) and :func:`~.worker.run_on_worker`
  is the task of one run: it starts the run as a durable job on that handler, says where
  (a Dask event), follows it to its end and returns its outcome. The task holds the
  worker resources it was submitted with (``claude=1``) while the run lives.
- :mod:`.placement` is the notebook side: it registers the plugin, submits the tasks
  (Dask decides where), and attaches each batch run to its job as soon as the worker says
  where it is, so the run streams straight from its worker over the protocol.
"""

from __future__ import annotations

__all__: list[str] = []
