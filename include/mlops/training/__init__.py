"""Training: GPU training runs as KubernetesPodOperator pods.

- ``params``: the form contract (the UI form and the REST ``conf``, validated at trigger time).
- ``plan``: the run plan, cross-field checks and the run's identity (version, URIs, arguments).
- ``profiles``: the named compute profiles (requests/limits, tolerations, node selectors).
- ``operator``: the platform's one KubernetesPodOperator wrapper and the training pod.
- ``failures``: why a pod failed, and whether a retry can fix it.
- ``tasks``: the callables that the DAG's tasks call.
"""
