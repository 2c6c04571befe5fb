"""Airflow's own REST API, called as the logged-in user: their token is forwarded, never replaced.

The API server calls itself on the address it is serving on (or ``MLOPS_AIRFLOW_API_URL``), so the
auth manager decides every read and every trigger exactly as it would for the user's own call.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import HTTPException, Request

TIMEOUT_SECONDS = 5.0
TOKEN_COOKIE = "_token"  # noqa: S105 - Airflow's COOKIE_NAME_JWT_TOKEN: the UI session, also sent to the page's iframe


def user_token(request: Request) -> str:
    """The caller's JWT: the ``Authorization: Bearer`` header, else the UI's session cookie."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    token = request.cookies.get(TOKEN_COOKIE)
    if not token:
        raise HTTPException(status_code=401, detail="Not authenticated")
    return token


def api_url(request: Request) -> str:
    """Base URL of this Airflow API server, as this process can reach it."""
    configured = os.environ.get("MLOPS_AIRFLOW_API_URL", "").rstrip("/")
    if configured:
        return configured
    host, port = request.scope.get("server") or (request.url.hostname, request.url.port)
    host = "127.0.0.1" if host in ("0.0.0.0", "::", None) else host  # noqa: S104 - reach a wildcard bind locally
    return f"{request.url.scheme}://{host}:{port}"


class AirflowApi:
    """A small async client of ``/api/v2`` with the user's token."""

    def __init__(self, request: Request) -> None:
        self.base = api_url(request) + "/api/v2"
        self.headers = {"Authorization": f"Bearer {user_token(request)}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``/api/v2{path}``; an error answer raises HTTPException with Airflow's status and detail."""
        import httpx

        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
            answer = await client.request(method, self.base + path, headers=self.headers, **kwargs)
        if answer.status_code >= 400:
            try:
                detail = answer.json().get("detail", answer.text)
            except ValueError:
                detail = answer.text
            raise HTTPException(status_code=answer.status_code, detail=f"Airflow API: {detail}")
        return answer.json() if answer.content else None

    async def trigger(self, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """Create a run of ``dag_id`` with ``conf`` (validated by the DAG's params); the run and whether the
        DAG is paused (a paused DAG's run waits, queued, until it is unpaused)."""
        run = await self.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        dag = await self.call("GET", f"/dags/{dag_id}")
        return {
            "dag_id": dag_id,
            "run_id": run["dag_run_id"],
            "state": run.get("state"),
            "dag_paused": bool(dag.get("is_paused")),
            "url": f"/dags/{dag_id}/runs/{run['dag_run_id']}",
        }
