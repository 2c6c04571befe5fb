"""mlops: the library behind the project's Airflow DAGs.

Everything that is not DAG wiring lives here: settings, compute profiles, the
KubernetesPodOperator wrapper, alerting, and the code of each capability.
Importing the package is cheap: submodules import heavy clients lazily.
"""

__version__ = "0.1.0"
