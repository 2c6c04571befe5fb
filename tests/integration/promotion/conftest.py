"""A model's serving namespace in the simulated cluster, with real model-server processes and S3 artifacts."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass

import pytest

from mlops.promotion import bluegreen, gates
from mlops.promotion.manifests.render import ServingSpec
from mlops.registry import ModelRegistry
from tests.harness.dagsteps import StepRunner, load_dag
from tests.harness.kubesim import LocalProcess
from tests.unit.serving.digits_artifacts import register_version

IMAGE = "ghcr.io/mlops-airflow/model-server:test"
BROKEN_IMAGE = "ghcr.io/mlops-airflow/model-server-typo:0.1.0"  # never registered: the pull fails
MODEL = "digits"


@dataclass
class Serving:
    """One test's model: the cluster, its artifacts bucket and registry, and the promotion steps."""

    kube: object
    cluster: bluegreen.Cluster
    namespace: str
    s3_client: object
    s3_endpoint: str
    bucket: str
    registry: ModelRegistry

    def register(self, version: str, quality: str = "good", reported_accuracy: float | None = None) -> str:
        return register_version(self.s3_client, self.bucket, MODEL, version, quality, reported_accuracy)

    def spec(self, version: str, color: str, image: str = IMAGE, deadline: int = 30) -> ServingSpec:
        return ServingSpec(
            MODEL,
            color,
            version,
            image,
            self.registry.get(MODEL, version)["artifact_uri"],
            self.namespace,
            replicas=1,
            readiness_period_seconds=1,
            progress_deadline_seconds=deadline,
            env={"AWS_ENDPOINT_URL": self.s3_endpoint},
        )

    def client(self, service: str) -> gates.ServiceClient:
        return gates.service_client(self.cluster.api_client, self.namespace, service)  # Service DNS

    @property
    def admin_apps(self):
        """AppsV1Api as the cluster admin: what a person or another controller does by hand (the
        code under test runs as the worker, whose Role has no ``deployments/scale``)."""
        from kubernetes import client

        return client.AppsV1Api(self.kube.admin_api_client())

    @property
    def admin_autoscaling(self):
        """AutoscalingV2Api as the cluster admin (the HPA controller's writes, in a test)."""
        from kubernetes import client

        return client.AutoscalingV2Api(self.kube.admin_api_client())

    def samples(self, version: str) -> gates.Samples:
        return gates.load_samples(self.s3_client, self.registry.get(MODEL, version)["artifact_uri"])

    def selector_color(self) -> str | None:
        service = self.kube.get("Service", self.namespace, MODEL)
        return service["spec"]["selector"]["color"] if service else None

    def replicas(self, color: str) -> int | None:
        dep = self.kube.get("Deployment", self.namespace, f"{MODEL}-{color}")
        return dep["spec"]["replicas"] if dep else None

    def promote(
        self,
        version: str,
        holder: str | None = None,
        image: str = IMAGE,
        deadline: int = 30,
        post_check=None,
        rollout_timeout: float = 60,
        analysis_seconds: float = 0,
        before_switch=None,
    ) -> dict:
        """Promote ``version`` by running ``dags/mlops_promotion.py``'s own tasks in the DAG's order
        (``tests.harness.dagsteps``: its trigger rules, its teardown, its retries), auto-promoting.

        ``before_switch``/``post_check`` run just before ``switch_traffic`` / just after it (to break
        something). Returns each step's value under its old short name, the task states (``states``)
        and raises the first failed task's error (unwrapped from Airflow's final-failure wrapper),
        after the DAG's clean-up ran, as a failed run would show it.
        """
        holder = holder or f"mlops_promotion/test-{uuid.uuid4().hex[:6]}"
        dag_id, run_id = holder.split("/", 1)
        assert dag_id == "mlops_promotion", holder
        settings = {
            "MLOPS_MODEL_SERVER_IMAGE": image,
            "MLOPS_MODEL_SERVER_PROGRESS_DEADLINE_SECONDS": str(deadline),
            "MLOPS_PROMOTION_ROLLOUT_TIMEOUT_SECONDS": str(int(rollout_timeout)),
        }
        with pytest.MonkeyPatch.context() as patch:
            for name, value in settings.items():
                patch.setenv(name, value)
            run = StepRunner(promotion_dag(), poke_seconds=0.1).run(
                {
                    "model": MODEL,
                    "version": version,
                    "auto_promote": True,
                    "analysis_duration_seconds": analysis_seconds,
                    "scale_down_delay_seconds": 0,
                    "dry_run": False,
                },
                run_id,
                before={"switch_traffic": before_switch} if before_switch else None,
                after={"switch_traffic": post_check} if post_check else None,
            )
        self.last_run = run
        out = {"holder": holder, "states": run.states}
        for key, task_id in STEPS.items():
            if run.value(task_id) is not None:
                out[key] = run.value(task_id)
        if run.states["resolve_active_color"] == "skipped" and run.states["reconcile"] == "success":
            out["state"] = {"already_active": True}
        error = run.first_error()
        if error is not None:
            raise error
        return out


# What Serving.promote returns, by the DAG's task ids.
STEPS = {
    "request": "resolve_request",
    "reconciled": "reconcile",
    "state": "resolve_active_color",
    "deployed": "deploy_candidate",
    "rollout": "wait_for_rollout",
    "pre": "run_pre_promotion_analysis",
    "switched": "switch_traffic",
    "post": "run_post_promotion_analysis",
    "pointer": "move_registry_pointer",
    "scaled": "scale_down_previous_color",
    "clean_up": "clean_up",
}


def promotion_dag():
    """``mlops_promotion`` as the DAG processor parses it (once per test session)."""
    from tests.conftest import REPO_ROOT

    return load_dag(REPO_ROOT / "dags" / "mlops_promotion.py", "mlops_promotion")


@pytest.fixture
def serving(kube, kube_conn, s3_conn, s3_client, monkeypatch) -> Serving:
    bucket = f"artifacts-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    monkeypatch.setenv("MLOPS_ARTIFACTS_BUCKET", bucket)
    monkeypatch.setenv("MLOPS_MODEL_SERVER_IMAGE", IMAGE)
    monkeypatch.setenv("MLOPS_MODEL_SERVER_REPLICAS", "1")
    monkeypatch.setenv("MLOPS_PROMOTION_POLL_SECONDS", "0.1")
    kube.register_image(
        IMAGE,
        LocalProcess(
            argv=[sys.executable, "-m", "mlops.serving"], env={"HOST": "127.0.0.1", "WARMUP_ITERATIONS": "3"}
        ),
    )
    cluster = bluegreen.Cluster.from_connection()
    cluster.retry = bluegreen.RetryPolicy(attempts=5, initial_seconds=0.05, max_seconds=0.5)
    yield Serving(kube, cluster, kube_conn, s3_client, s3_conn, bucket, ModelRegistry(s3_client, bucket))
    kube.resume_controllers()
    kube.faults.clear()
