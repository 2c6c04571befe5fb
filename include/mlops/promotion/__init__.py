"""Promotion: blue-green model promotion on Kubernetes, with gates and rollback.

- ``params``: the form contract and the run's request (model, version, options).
- ``bluegreen``: the blue-green state machine on the cluster.
- ``gates``: the analysis gates (health, version, smoke predictions, quality, Prometheus).
- ``manifests``: the serving manifests' templates and their renderer.
- ``tasks``: the callables that the DAG's tasks call.
"""
