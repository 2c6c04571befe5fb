"""Render the serving manifests of one model color from the YAML templates beside this module.

For each model and color: a Deployment, an HPA and a PodDisruptionBudget; for each model: the
active Service (production traffic) and the preview Service (the candidate, for analysis).
Every value reaches the YAML through ``tojson``, so no input can change the document's shape.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

APP = "model-server"
COLORS = ("blue", "green")
MANAGED_BY = "mlops-airflow"
SERVICE_PORT = 80
NO_COLOR = "none"  # selector of an active Service that has never been switched: it matches no pod

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_TEMPLATES = Path(__file__).parent / "templates"


def deployment_name(model: str, color: str) -> str:
    """The Deployment (and HPA and PDB) of one color: ``{model}-{color}``."""
    return f"{model}-{color}"


def active_service_name(model: str) -> str:
    """The Service that takes production traffic: the model's name."""
    return model


def preview_service_name(model: str) -> str:
    """The Service that reaches the candidate color: ``{model}-preview``."""
    return f"{model}-preview"


def selector(model: str, color: str) -> dict[str, str]:
    """The pod selector of one color (the Deployment's immutable selector and the Services')."""
    return {"app": APP, "model": model, "color": color}


def _default_service_account() -> str | None:
    from mlops.settings import get_settings

    return get_settings().model_server_service_account or None


def validate_names(model: str, version: str) -> None:
    """Raise ``ValueError`` unless the model is a DNS label and the version a label value."""
    if not _DNS_LABEL.match(model) or len(model) > 40:
        raise ValueError(f"model {model!r} must be a DNS label of at most 40 chars (lowercase, digits, '-')")
    if not _LABEL_VALUE.match(version) or len(version) > 63:
        raise ValueError(
            f"version {version!r} must be a Kubernetes label value (<= 63 chars of [A-Za-z0-9-_.])"
        )


@dataclass(frozen=True)
class ServingSpec:
    """Everything that varies between two renders of one model color."""

    model: str
    color: str
    version: str
    image: str
    model_uri: str
    namespace: str
    replicas: int = 2
    max_replicas: int = 6
    port: int = 8080
    cpu_request: str = "250m"
    memory_request: str = "256Mi"
    cpu_limit: str = "1"
    memory_limit: str = "512Mi"
    progress_deadline_seconds: int = 600
    readiness_period_seconds: int = 5
    env: dict[str, str] = field(default_factory=dict)
    s3_secret: str | None = (
        None  # Secret with keys aws_access_key_id/aws_secret_access_key (as the trainer's)
    )
    # The pods' service account (IRSA); by default the ``model_server_service_account`` setting.
    service_account: str | None = field(default_factory=lambda: _default_service_account())
    annotations: dict[str, str] = field(default_factory=dict)
    # sha256 of model.onnx recorded at registration: the server refuses to start on other bytes
    model_sha256: str | None = None

    def __post_init__(self) -> None:
        validate_names(self.model, self.version)
        if self.color not in COLORS:
            raise ValueError(f"color must be one of {COLORS}, got {self.color!r}")
        if not 1 <= self.replicas <= self.max_replicas:
            raise ValueError(f"replicas must be between 1 and max_replicas ({self.max_replicas})")

    @property
    def labels(self) -> dict[str, str]:
        return {
            **selector(self.model, self.color),
            "version": self.version,
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }


@functools.cache
def _environment():
    import jinja2

    return jinja2.Environment(  # noqa: S701 -- renders YAML, not HTML; values go through tojson
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _render(template: str, **values) -> dict:
    return yaml.safe_load(_environment().get_template(template).render(**values))


def deployment(spec: ServingSpec) -> dict:
    """The Deployment of one color running ``spec.version``."""
    env = {
        "MODEL_NAME": spec.model,
        "MODEL_VERSION": spec.version,
        "MODEL_URI": spec.model_uri,
        "PORT": str(spec.port),
        "HOME": "/tmp",  # noqa: S108 -- the pod's writable emptyDir
    }
    if spec.model_sha256:
        env["MODEL_SHA256"] = spec.model_sha256
    env.update(spec.env)
    entries: list[dict] = [{"name": k, "value": v} for k, v in env.items()]
    if spec.s3_secret:
        entries += [
            {"name": var, "valueFrom": {"secretKeyRef": {"name": spec.s3_secret, "key": var.lower()}}}
            for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        ]
    return _render(
        "deployment.yaml.j2",
        spec=spec,
        name=deployment_name(spec.model, spec.color),
        labels=spec.labels,
        selector=selector(spec.model, spec.color),
        env=entries,
    )


def hpa(spec: ServingSpec) -> dict:
    """The HorizontalPodAutoscaler of one color (autoscaling/v2; CPU 70 %, memory 80 %)."""
    return _render("hpa.yaml.j2", spec=spec, name=deployment_name(spec.model, spec.color), labels=spec.labels)


def pdb(spec: ServingSpec) -> dict:
    """The PodDisruptionBudget of one color."""
    return _render(
        "pdb.yaml.j2",
        spec=spec,
        name=deployment_name(spec.model, spec.color),
        labels=spec.labels,
        selector=selector(spec.model, spec.color),
    )


def service(
    model: str, namespace: str, role: str, color: str, annotations: dict[str, str] | None = None
) -> dict:
    """The ``active`` or ``preview`` Service of a model, selecting ``color`` (``NO_COLOR``: no pod)."""
    if role not in ("active", "preview"):
        raise ValueError(f"role must be 'active' or 'preview', got {role!r}")
    name = active_service_name(model) if role == "active" else preview_service_name(model)
    return _render(
        "service.yaml.j2",
        name=name,
        namespace=namespace,
        model=model,
        role=role,
        labels={"app": APP, "model": model, "role": role, "app.kubernetes.io/managed-by": MANAGED_BY},
        annotations=annotations or {},
        selector=selector(model, color),
        service_port=SERVICE_PORT,
    )


def render_all(spec: ServingSpec, active_color: str | None = None) -> list[dict]:
    """Every manifest of a model color: Deployment, HPA, PDB and both Services."""
    return [
        deployment(spec),
        hpa(spec),
        pdb(spec),
        service(spec.model, spec.namespace, "active", active_color or NO_COLOR),
        service(spec.model, spec.namespace, "preview", spec.color),
    ]
