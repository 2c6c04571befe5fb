"""A model's serving namespace in the simulated cluster, with real model-server processes and S3 artifacts."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass

import pytest

from mlops.promotion import bluegreen, gates
from mlops.promotion.manifests.render import ServingSpec
from mlops.registry import ModelRegistry
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
        from kubernetes import client, config

        return client.AppsV1Api(config.new_client_from_config(config_file=self.kube.kubeconfig))

    @property
    def admin_autoscaling(self):
        """AutoscalingV2Api as the cluster admin (the HPA controller's writes, in a test)."""
        from kubernetes import client, config

        return client.AutoscalingV2Api(config.new_client_from_config(config_file=self.kube.kubeconfig))

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
        pointer_retries: int = 1,
    ) -> dict:
        """The promotion DAG's steps in order, with its always-run clean-up. Returns what each step gave.

        ``before_switch``/``post_check`` run just before the switch / just after it (to break
        something); the pointer move is retried ``pointer_retries`` times, as Airflow retries a task.
        """
        holder = holder or f"mlops_promotion/test-{uuid.uuid4().hex[:6]}"
        out: dict = {"holder": holder}
        production = self.registry.production(MODEL)
        prod_version = production["version"] if production else None
        completed = False
        state = None
        try:
            state = bluegreen.resolve_active_color(
                self.cluster, MODEL, holder, version=version, registry=self.registry
            )
            out["state"] = state
            if state["already_active"]:
                return out
            spec = self.spec(version, state["candidate_color"], image, deadline)
            out["deployed"] = bluegreen.deploy_candidate(self.cluster, spec, holder)
            out["rollout"] = bluegreen.wait_for_rollout(
                self.cluster,
                out["deployed"]["deployment"],
                version,
                out["deployed"]["generation"],
                rollout_timeout,
                0.1,
            )
            prod_acc = self.registry.get(MODEL, prod_version)["metrics"]["accuracy"] if prod_version else None
            out["pre"] = gates.pre_promotion(
                self.client(f"{MODEL}-preview"),
                MODEL,
                version,
                self.samples(version),
                self.registry.get(MODEL, version)["metrics"]["accuracy"],
                prod_acc,
                gates.Gates(),
            ).raise_if_failed()
            if before_switch:
                before_switch()
            out["switched"] = bluegreen.switch_traffic(
                self.cluster, MODEL, state["candidate_color"], state["active_color"], version, holder
            )
            if post_check:
                post_check()
            out["post"] = gates.analysis_window(
                self.client(MODEL),
                MODEL,
                version,
                self.samples(version),
                gates.Gates(),
                analysis_seconds,
                0.2,
            ).raise_if_failed()
            for attempt in range(pointer_retries + 1):
                try:
                    out["pointer"] = self.registry.promote(MODEL, version, prod_version, holder)
                    break
                except Exception:  # as Airflow retries any failed task
                    if attempt == pointer_retries:
                        raise
            completed = True
            out["scaled"] = bluegreen.scale_down(self.cluster, MODEL, state["active_color"], 0, holder=holder)
            return out
        finally:
            if state is not None and not state["already_active"]:
                out["clean_up"] = bluegreen.clean_up(
                    self.cluster,
                    MODEL,
                    state["candidate_color"],
                    state["active_color"],
                    holder,
                    completed,
                    60,
                    0.1,
                    registry=self.registry,
                    version=version,
                )


@pytest.fixture
def serving(kube, kube_conn, s3_conn, s3_client, monkeypatch) -> Serving:
    bucket = f"artifacts-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    monkeypatch.setenv("MLOPS_ARTIFACTS_BUCKET", bucket)
    monkeypatch.setenv("MLOPS_MODEL_SERVER_IMAGE", IMAGE)
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
