"""The page's FastAPI app: HTML under ``/mlops/ui/``, JSON and actions under ``/mlops/api/``.

Every route requires an authenticated Airflow user (Airflow mounts plugin apps without any auth):
reading needs the auth manager's PLUGINS view; each action needs permission to trigger (or, for
silences, edit) the DAG it concerns, checked by ``requires_access_dag`` before anything happens.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView, DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag, requires_access_view
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from mlops_platform_ui import backups, fetch, health, models, training
from mlops_platform_ui.airflow_api import AirflowApi

PROMOTION_DAG = "mlops_promotion"
HEALTH_DAG = "mlops_health"
# A rollback is the emergency rollback DAG: it never queues behind a promotion (it pre-empts its lease).
ROLLBACK_DAG = "mlops_rollback"


def rollback_conf(model: str, reason: str) -> dict[str, Any]:
    """The ``conf`` that asks ``ROLLBACK_DAG`` to roll ``model`` back (the reason goes with its alerts)."""
    return {"model": model, "reason": reason}


CACHE_SECONDS = 5.0
TIMEOUT_SECONDS = 3.0
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
TEMPLATES = Path(__file__).parent / "templates"


def _can_view():
    return Depends(requires_access_view(AccessView.PLUGINS))


def _can_trigger(dag_id: str):
    return Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=dag_id))


def _can_edit(dag_id: str):
    return Depends(requires_access_dag("PUT", param_dag_id=dag_id))


def _can_read_run():
    return Depends(requires_access_dag("GET", DagAccessEntity.RUN))


class PromoteBody(BaseModel):
    version: str = Field(pattern=_NAME.pattern)


class RollbackBody(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class SilenceBody(BaseModel):
    matcher: str = Field(min_length=1, max_length=200)
    minutes: int = Field(ge=1, le=30 * 24 * 60)
    comment: str = Field(min_length=1, max_length=500)


class TrainingBody(BaseModel):
    conf: dict[str, Any]


# -- reading -------------------------------------------------------------------------------------
def _registry_overview() -> dict[str, Any]:
    reg = models.registry()
    return {name: models.registry_state(name, reg) for name in models.model_names(reg)}


async def _gather(request: Request) -> dict[str, Any]:
    """Every section, each with its data or its backend's error; backends are read concurrently."""
    loop = asyncio.get_running_loop()

    def read(key: str, reader: Any) -> Any:
        return loop.run_in_executor(
            None, lambda: fetch.cached(key, reader, ttl=CACHE_SECONDS, timeout=TIMEOUT_SECONDS)
        )

    registry_f = read("registry", _registry_overview)
    backups_f = read("backups", backups.backups_state)
    health_f = read("health", health.health_state)
    started = loop.time()
    try:
        train = fetch.Section(data=await asyncio.wait_for(training.training_state(AirflowApi(request)), 5))
        train.seconds = loop.time() - started
    except HTTPException as exc:
        train = fetch.Section(error=f"HTTP {exc.status_code}: {exc.detail}")
    except Exception as exc:
        train = fetch.Section(error=fetch.describe(exc))
    registry_s = await registry_f
    clusters: dict[str, Any] = {}
    if registry_s.data:
        futures = {m: read(f"cluster:{m}", lambda m=m: models.cluster_state(m)) for m in registry_s.data}
        clusters = {m: (await f).as_dict() for m, f in futures.items()}
    return {
        "registry": registry_s.as_dict(),
        "clusters": clusters,
        "backups": (await backups_f).as_dict(),
        "health": (await health_f).as_dict(),
        "training": train.as_dict(),
        "rollback_dag": ROLLBACK_DAG,
    }


def _render(name: str, **context: Any) -> HTMLResponse:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["age"] = _age
    env.filters["size"] = _size
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    return HTMLResponse(env.get_template(name).render(**context))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _known_model(model: str) -> dict[str, Any]:
    """The model's registry state; 404 naming the model when the registry has no entry for it."""
    if not _NAME.match(model):
        raise HTTPException(status_code=404, detail=f"model {model!r} is not in the registry")
    try:
        reg = models.registry()
        if model not in models.model_names(reg):
            raise HTTPException(status_code=404, detail=f"model {model!r} is not in the registry")
        return models.registry_state(model, reg)
    except HTTPException:
        raise
    except Exception as exc:
        raise HTTPException(status_code=502, detail=f"registry: {fetch.describe(exc)}") from exc


# -- the app ---------------------------------------------------------------------------------------
def create_app() -> FastAPI:
    """The sub-app Airflow mounts under ``/mlops`` (no /docs, /redoc or /openapi.json)."""
    app = FastAPI(
        title="ML platform", docs_url=None, redoc_url=None, openapi_url=None, dependencies=[_can_view()]
    )

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("ui/")

    @app.get("/ui/", response_class=HTMLResponse)
    async def page(request: Request) -> HTMLResponse:
        state = await _gather(request)
        return _render("page.html", s=state, request=request)

    @app.get("/api/state")
    async def state(request: Request) -> dict[str, Any]:
        return await _gather(request)

    @app.get("/api/models/{model}")
    async def model(model: str) -> dict[str, Any]:
        return await asyncio.to_thread(_known_model, model)

    @app.post("/api/models/{model}/promote", dependencies=[_can_trigger(PROMOTION_DAG)])
    async def promote(model: str, body: PromoteBody, request: Request) -> JSONResponse:
        known = await asyncio.to_thread(_known_model, model)
        try:
            await asyncio.to_thread(models.registry().get, model, body.version)
        except LookupError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        if (known["production"] or {}).get("version") == body.version:
            raise HTTPException(status_code=409, detail=f"{model} {body.version} already serves production")
        run = await AirflowApi(request).trigger(PROMOTION_DAG, {"model": model, "version": body.version})
        fetch.forget()
        return JSONResponse(run, status_code=201)

    @app.post("/api/models/{model}/rollback", dependencies=[_can_trigger(ROLLBACK_DAG)])
    async def rollback(model: str, body: RollbackBody, request: Request) -> JSONResponse:
        known = await asyncio.to_thread(_known_model, model)
        production = known["production"]
        if not production or not production.get("previous_version"):
            raise HTTPException(
                status_code=409, detail=f"{model} has no previous production version to return to"
            )
        run = await AirflowApi(request).trigger(ROLLBACK_DAG, rollback_conf(model, body.reason))
        fetch.forget()
        return JSONResponse(run, status_code=201)

    @app.post("/api/training", dependencies=[_can_trigger(training.TRAINING_DAG)])
    async def start_training(body: TrainingBody, request: Request) -> JSONResponse:
        run = await AirflowApi(request).trigger(training.TRAINING_DAG, body.conf)
        return JSONResponse(run, status_code=201)

    @app.post("/api/silences", dependencies=[_can_edit(HEALTH_DAG)])
    async def create_silence(body: SilenceBody, user: GetUserDep) -> JSONResponse:
        from mlops.health.silences import silence

        silence_id = await asyncio.to_thread(
            silence, body.matcher, body.minutes * 60, user.get_name(), body.comment
        )
        fetch.forget("health")
        return JSONResponse({"id": silence_id}, status_code=201)

    @app.post("/api/silences/{silence_id}/expire", dependencies=[_can_edit(HEALTH_DAG)])
    async def expire_silence(silence_id: str) -> dict[str, Any]:
        from mlops.health.silences import expire

        if not await asyncio.to_thread(expire, silence_id):
            raise HTTPException(status_code=404, detail=f"no active silence with id {silence_id!r}")
        fetch.forget("health")
        return {"id": silence_id, "expired": True}

    @app.get(
        "/ui/runs/{dag_id}/{run_id}/model-card", response_class=HTMLResponse, dependencies=[_can_read_run()]
    )
    async def model_card_tab(dag_id: str, run_id: str, request: Request) -> HTMLResponse:
        context: dict[str, Any] = {
            "dag_id": dag_id,
            "run_id": run_id,
            "entry": None,
            "card": None,
            "error": None,
        }
        if dag_id == training.TRAINING_DAG:
            try:
                run = await AirflowApi(request).call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
                model_name = (run.get("conf") or {}).get("model_name")
                entry = (
                    await asyncio.to_thread(models.find_version_of_run, model_name, run_id)
                    if model_name
                    else None
                )
                context["entry"] = entry
                if entry:
                    context["card"] = await asyncio.to_thread(models.model_card, model_name, entry["version"])
            except HTTPException as exc:
                context["error"] = f"HTTP {exc.status_code}: {exc.detail}"
            except Exception as exc:
                context["error"] = fetch.describe(exc)
        return _render("model_card.html", **context)

    @app.get(
        "/ui/runs/{dag_id}/{run_id}/promotion", response_class=HTMLResponse, dependencies=[_can_read_run()]
    )
    async def promotion_tab(dag_id: str, run_id: str, request: Request) -> HTMLResponse:
        context: dict[str, Any] = {
            "dag_id": dag_id,
            "run_id": run_id,
            "tasks": [],
            "request_": None,
            "error": None,
        }
        if dag_id == PROMOTION_DAG:
            api = AirflowApi(request)
            try:
                tis = await api.call(
                    "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100}
                )
                tasks = sorted(tis["task_instances"], key=lambda t: t.get("start_date") or "9999")
                for ti in tasks:
                    try:
                        xcom = await api.call(
                            "GET",
                            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/xcomEntries/return_value",
                        )
                        ti["verdict"] = xcom.get("value")
                    except HTTPException:
                        ti["verdict"] = None
                context["tasks"] = tasks
            except HTTPException as exc:
                context["error"] = f"HTTP {exc.status_code}: {exc.detail}"
        return _render("promotion.html", **context)

    return app
