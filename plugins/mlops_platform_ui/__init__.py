"""The ML platform page: a FastAPI app mounted by ``plugins/mlops_platform.py`` under ``/mlops``.

Each section reads the same library the DAGs use (``mlops.registry``, ``mlops.promotion``,
``mlops.backups``, ``mlops.health``); actions go through Airflow's REST API as the logged-in user.
"""
