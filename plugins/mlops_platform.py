"""The "ML platform" page in the Airflow UI: models, backups, health and training at a glance.

Registers, under ``/mlops``, a FastAPI app (server-rendered HTML and a small JSON API), a navigation
entry that opens the page inside the UI, and two tabs on DAG runs ("Model card" on training runs,
"Promotion" on promotion runs). Every Airflow process imports this file, so it imports nothing heavy
and touches no network, database, S3 or Kubernetes: the app itself is built on its first request.
The implementation lives in the ``mlops_platform_ui`` package beside this file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/mlops"
_HERE = Path(__file__).resolve().parent


class _AppOnFirstRequest:
    """An ASGI app that builds the real FastAPI app when the first request arrives."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._app is None:
            if str(_HERE) not in sys.path:
                sys.path.append(str(_HERE))
            from mlops_platform_ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        return "mlops_platform_ui.app:create_app"


class MlopsPlatformPlugin(AirflowPlugin):
    """The ML platform page and its per-run tabs."""

    name = "mlops_platform"
    fastapi_apps = [{"app": _AppOnFirstRequest(), "url_prefix": URL_PREFIX, "name": "ML platform"}]
    external_views = [
        {
            "name": "ML platform",
            "href": "mlops/ui/",
            "url_route": "mlops-platform",
            "destination": "nav",
            "nav_top_level": True,
        },
        {
            "name": "Model card",
            "href": "mlops/ui/runs/{DAG_ID}/{RUN_ID}/model-card",
            "url_route": "model-card",
            "destination": "dag_run",
        },
        {
            "name": "Promotion",
            "href": "mlops/ui/runs/{DAG_ID}/{RUN_ID}/promotion",
            "url_route": "promotion",
            "destination": "dag_run",
        },
    ]
