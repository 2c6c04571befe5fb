"""Promotion: blue-green model promotion on Kubernetes, with gates and rollback.

The registry's production pointer is the source of truth for what serves production; the cluster
follows it (see ``bluegreen``'s docstring).

- ``params``: the form contract and the run's request (model, version, options).
- ``bluegreen``: the blue-green state machine on the cluster.
- ``lease``: the model's promotion lease (a ``coordination.k8s.io/v1`` Lease): take, renew, pre-empt.
- ``reconcile``: make the cluster agree with the registry pointer, or say how to by hand.
- ``kube``: the Kubernetes API with retries and readable 403s; ``errors``: the steps' refusals.
- ``gates``: the analysis gates (health, version, smoke predictions, quality, Prometheus).
- ``manifests``: the serving manifests' templates and their renderer.
- ``tasks``: the callables that the DAG's tasks call.
"""
