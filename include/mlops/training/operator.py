"""The project's single wrapper around KubernetesPodOperator.

DAGs pass an image, arguments and a named compute profile; every platform
default lives here, each with the reason it is set. Values that come from the
run (profile, GPU count, model) may be Jinja templates: they are resolved when
the task runs, together with the settings (namespace, connection, timeouts).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.secret import Secret
from airflow.providers.cncf.kubernetes.utils.pod_manager import (
    OnFinishAction,
    PodLaunchFailedException,
    PodManager,
    PodPhase,
)
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from mlops.settings import get_settings
from mlops.training.failures import TRAINING_CODE, classify_pod_failure
from mlops.training.params import DEFAULT_IMAGE
from mlops.training.plan import plan_run
from mlops.training.profiles import get_profile

RUN_UID = 10001
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]")

# Restricted Pod Security Standard, pod level.
POD_SECURITY_CONTEXT = k8s.V1PodSecurityContext(
    run_as_non_root=True,
    run_as_user=RUN_UID,
    run_as_group=RUN_UID,
    fs_group=RUN_UID,
    seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
)
# Restricted Pod Security Standard, container level; the root filesystem is read-only,
# so /tmp and /scratch are emptyDir volumes.
CONTAINER_SECURITY_CONTEXT = k8s.V1SecurityContext(
    run_as_non_root=True,
    allow_privilege_escalation=False,
    read_only_root_filesystem=True,
    capabilities=k8s.V1Capabilities(drop=["ALL"]),
    seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
)


def label_value(value: object) -> str:
    """Sanitise any value into a valid Kubernetes label value (<= 63 chars, alphanumeric ends)."""
    text = _LABEL_VALUE.sub("-", str(value))[:63].strip("-_.")
    return text or "none"


class _StartupPodManager(PodManager):
    """The provider's PodManager, which also gives up at start-up on a container that cannot start.

    The provider fails fast on InvalidImageName and on an image it cannot pull, but waits out its whole
    startup timeout on CreateContainerConfigError (a missing Secret or key), with a node (and its GPUs)
    held by the Pending pod. The kubelet reports it at once (pkg/kubelet/kuberuntime:
    ErrCreateContainerConfig).
    """

    _starting = False

    def read_pod(self, pod: k8s.V1Pod) -> k8s.V1Pod:
        remote = super().read_pod(pod)
        if self._starting:
            for status in (remote.status and remote.status.container_statuses) or []:
                waiting = status.state and status.state.waiting
                if waiting and waiting.reason == "CreateContainerConfigError":
                    raise PodLaunchFailedException(f"{waiting.reason}: {waiting.message}")
        return remote

    async def await_pod_start(self, pod: k8s.V1Pod, *args: Any, **kwargs: Any) -> None:
        self._starting = True
        try:
            await super().await_pod_start(pod, *args, **kwargs)
        finally:
            self._starting = False


def _scratch_volumes(scratch_size: str) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
    volumes = [
        k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="1Gi")),
        k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=scratch_size)),
    ]
    mounts = [
        k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),  # noqa: S108 - an emptyDir, not the host's /tmp
        k8s.V1VolumeMount(name="scratch", mount_path="/scratch"),
    ]
    return volumes, mounts


def _shm_volume(size: str) -> tuple[k8s.V1Volume, k8s.V1VolumeMount]:
    # Containers get a 64 MiB /dev/shm; PyTorch DataLoader workers and NCCL need far more.
    # A memory-backed emptyDir counts against the container's memory limit, hence the sizeLimit.
    volume = k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=size))
    return volume, k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm")  # noqa: S108 - the pod's own tmpfs


class PlatformPodOperator(KubernetesPodOperator):
    """KubernetesPodOperator with the platform's defaults.

    :param compute_profile: a profile name from ``mlops.training.profiles`` (may be templated).
    :param gpus: GPU count; ``None`` takes the profile's default (may be templated).
    :param model_name: labels the pod with the model it works on (may be templated).
    :param secret_env: ``{ENV_NAME: (secret_name, key)}``; credentials only ever come from Secrets.
    :param keep_failed_pod: keep a pod that ended Failed, for debugging; ``None`` reads
        ``MLOPS_KEEP_FAILED_PODS``. Any other pod (Pending, Running, Succeeded) is always deleted.
    :param retry_application_failures: also retry a training-code failure (a non-zero exit that the
        trainer's exit codes do not mark as transient). What spends retries is decided in
        :mod:`mlops.training.failures`.
    :param startup_timeout_seconds: how long a scheduled pod may take to start;
        ``schedule_timeout_seconds``: how long it may wait for a node (e.g. a GPU pool scaling from
        zero). Both default to the settings' ``pod_startup_timeout_seconds``.
    """

    template_fields: Sequence[str] = (
        *KubernetesPodOperator.template_fields,
        "compute_profile",
        "gpus",
        "model_name",
        "active_deadline_seconds",
        "retry_application_failures",
        "secret_env",
    )

    def __init__(
        self,
        *,
        image: str,
        arguments: list[str] | None = None,
        compute_profile: str = "cpu",
        gpus: int | str | None = None,
        model_name: str | None = None,
        env_vars: Mapping[str, str] | None = None,
        secret_env: Mapping[str, tuple[str, str]] | None = None,
        service_account_name: str | None = None,
        namespace: str | None = None,
        keep_failed_pod: bool | None = None,
        retry_application_failures: bool | str = False,
        scratch_size: str = "50Gi",
        labels: Mapping[str, str] | None = None,
        startup_timeout_seconds: int | None = None,
        schedule_timeout_seconds: int | None = None,
        **kwargs: Any,
    ) -> None:
        volumes, mounts = _scratch_volumes(scratch_size)
        settings = get_settings()
        startup = startup_timeout_seconds or settings.pod_startup_timeout_seconds
        env = {
            "AIRFLOW_DAG_ID": "{{ dag.dag_id }}",
            "AIRFLOW_TASK_ID": "{{ task.task_id }}",
            "AIRFLOW_RUN_ID": "{{ run_id }}",
            "AIRFLOW_TRY_NUMBER": "{{ ti.try_number }}",
            # REST-triggered runs may have no logical date (no `ts`): fall back to when the run was due.
            "AIRFLOW_TS": "{{ ts if ts is defined else dag_run.run_after.isoformat() }}",
            **(env_vars or {}),
        }
        kwargs.setdefault("name", kwargs.get("task_id", "task").replace("_", "-"))
        super().__init__(
            image=image,
            arguments=arguments,
            env_vars=env,
            namespace=namespace,
            labels={
                "app.kubernetes.io/managed-by": "airflow",
                "app.kubernetes.io/part-of": "mlops",
                **(labels or {}),
            },
            service_account_name=service_account_name,
            # Pod settings that must hold for every workload:
            security_context=POD_SECURITY_CONTEXT,
            container_security_context=CONTAINER_SECURITY_CONTEXT,
            volumes=volumes,
            volume_mounts=mounts,
            automount_service_account_token=False,  # workloads do not call the Kubernetes API
            # The container's last log lines become its termination message, so the reason
            # for a crash reaches the task log even when the log stream was cut.
            termination_message_policy="FallbackToLogsOnError",
            # No pod outlives its task: deleted when it finishes (see keep_failed_pod) and when
            # the task is killed from the UI, cleared or timed out.
            on_finish_action=OnFinishAction.DELETE_POD.value,
            on_kill_action="delete_pod",
            get_logs=True,  # stream the container's log into the task log
            log_events_on_failure=True,  # scheduling / pull / eviction events explain infra failures
            durable=True,  # a restarted worker adopts the running pod instead of starting a second one
            # Both through the constructor: the provider derives its scheduling timeout from the startup
            # timeout here, in __init__, and a later assignment would leave it at its 120 s default.
            startup_timeout_seconds=startup,
            schedule_timeout_seconds=schedule_timeout_seconds or startup,
            # The failure names phase, reason, exit code and message (mlops.training.failures.describe_pod);
            # the provider's dump of the whole pod (17 kB) would bury it.
            log_pod_spec_on_failure=False,
            **kwargs,
        )
        self.compute_profile = compute_profile
        self.gpus = gpus
        self.model_name = model_name
        self.secret_env = dict(secret_env or {})
        self.keep_failed_pod = keep_failed_pod
        self.retry_application_failures = retry_application_failures
        self._final_pod: k8s.V1Pod | None = None
        self._pod_gone = False
        self._keep_failed = False
        self._resolved = False

    # -- run-time resolution ---------------------------------------------------------------
    def _resolve_runtime(self) -> None:
        """Apply settings and the (rendered) compute profile. Idempotent."""
        if self._resolved:
            return
        settings = get_settings()
        if not self.namespace:
            self.namespace = settings.training_namespace
        if not self.kubernetes_conn_id:
            self.kubernetes_conn_id = settings.kubernetes_conn_id
        if not self.service_account_name:
            self.service_account_name = settings.training_service_account
        self.startup_check_interval_seconds = settings.pod_poll_interval_seconds
        self.poll_interval = settings.pod_poll_interval_seconds
        # Keeping is decided in cleanup(), from the pod's final phase: only a Failed pod is kept.
        self._keep_failed = (
            settings.keep_failed_pods if self.keep_failed_pod is None else self.keep_failed_pod
        )

        profile = get_profile(str(self.compute_profile))
        gpus = None if self.gpus in (None, "", "None") else int(self.gpus)
        self.container_resources = profile.resources(gpus)
        shm_volume, shm_mount = _shm_volume(profile.shape(gpus)["shm"])
        self.volumes = [*(self.volumes or []), shm_volume]
        self.volume_mounts = [*(self.volume_mounts or []), shm_mount]
        self.node_selector = dict(profile.node_selector)
        self.tolerations = profile.k8s_tolerations()
        self.affinity = profile.k8s_affinity() or k8s.V1Affinity()
        self.priority_class_name = profile.priority_class
        self.labels.update({"mlops.io/compute-profile": profile.name})
        if self.model_name:
            self.labels["mlops.io/model"] = label_value(self.model_name)
        if isinstance(self.retry_application_failures, str):
            self.retry_application_failures = self.retry_application_failures.strip().lower() == "true"
        if self.active_deadline_seconds is not None:
            self.active_deadline_seconds = int(self.active_deadline_seconds)
        self.secrets = [
            Secret("env", name, secret, key) for name, (secret, key) in sorted(self.secret_env.items())
        ]
        # Optional settings render to "": leave such variables unset rather than set to empty.
        if isinstance(self.env_vars, dict):
            self.env_vars = {k: v for k, v in self.env_vars.items() if v not in ("", None)}
        elif isinstance(self.env_vars, list):
            self.env_vars = [
                e for e in self.env_vars if e.value_from is not None or e.value not in ("", None)
            ]
        self._resolved = True

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        self._resolve_runtime()
        return super().build_pod_request_obj(context, dry_run=dry_run)

    @cached_property
    def pod_manager(self) -> PodManager:
        return _StartupPodManager(kube_client=self.client, callbacks=self.callbacks)

    def cleanup(self, pod: k8s.V1Pod, remote_pod: k8s.V1Pod, *args: Any, **kwargs: Any) -> None:
        # The provider hands over the snapshot taken at create (still Pending) when start-up failed:
        # judge, keep or delete the pod as it is now.
        if remote_pod is not None and not self._killed:
            remote_pod = self._reread(pod if pod is not None and pod.metadata else remote_pod, remote_pod)
        self._final_pod = remote_pod
        phase = remote_pod.status.phase if remote_pod is not None and remote_pod.status else None
        # Only a pod that ended Failed may stay: a Pending or Running one would still hold its node, or
        # run on beside the retry's pod, writing to the same checkpoint.
        keep = self._keep_failed and phase == PodPhase.FAILED
        self.on_finish_action = OnFinishAction.KEEP_POD if keep else OnFinishAction.DELETE_POD
        super().cleanup(pod, remote_pod, *args, **kwargs)

    def _reread(self, pod: k8s.V1Pod, fallback: k8s.V1Pod) -> k8s.V1Pod | None:
        try:
            return self.client.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
        except ApiException as exc:
            if exc.status == 404:
                self._pod_gone = True
                return None
            self.log.warning(
                "Could not re-read pod %s (HTTP %s); judging its last state", pod.metadata.name, exc.status
            )
            return fallback

    def prepare(self, context: Any) -> None:
        """Hook for subclasses: set run-dependent fields from the context before the pod is built."""

    def add_env(self, env: Mapping[str, str]) -> None:
        """Add plain environment variables after template rendering (e.g. from :meth:`prepare`)."""
        current = self.env_vars
        if isinstance(current, dict):
            current = [k8s.V1EnvVar(name=k, value=v) for k, v in current.items()]
        self.env_vars = [*(current or []), *(k8s.V1EnvVar(name=k, value=str(v)) for k, v in env.items())]

    def execute(self, context: Any) -> Any:
        self.prepare(context)
        self._resolve_runtime()
        try:
            return super().execute(context)
        except AirflowFailException:
            raise
        except Exception as exc:
            container = self.base_container_name or "base"
            failure = classify_pod_failure(self._final_pod, container, error=exc, pod_gone=self._pod_gone)
            self.log.error("Pod failure classified as %s: %s", failure.kind, failure.message)
            retry = failure.retryable or (failure.kind == TRAINING_CODE and self.retry_application_failures)
            if not retry:
                # It would fail again the same way: do not spend GPU time on retries.
                raise AirflowFailException(f"{failure.kind} failure: {failure.message}") from exc
            raise AirflowException(f"{failure.kind} failure: {failure.message}") from exc


class TrainingPodOperator(PlatformPodOperator):
    """The trainer's pod, shaped by the run's params (see :func:`training_params`).

    The plan is pushed to XCom under the key ``plan`` for the registration step. A plan
    that cannot be made (e.g. too many GPUs for the profile) fails the task at once,
    naming the parameter, without spending retries and before any pod exists.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(image=DEFAULT_IMAGE, **kwargs)

    def prepare(self, context: Any) -> None:
        from mlops.training.alerts import RunRefused

        if getattr(self, "_prepared", False):
            return
        self._prepared = True
        settings = get_settings()
        params = context["params"]
        run_type = getattr(context.get("dag_run"), "run_type", None)
        try:
            plan = plan_run(
                params, context["run_id"], context.get("logical_date"), settings, run_type=run_type
            )
        except ValueError as exc:  # a user's mistake: no retry, and Slack only (mlops.training.alerts)
            raise RunRefused(str(exc)) from exc
        self.labels.update({f"run.mlops.io/{k}": v for k, v in plan.labels.items()})
        self.image = plan.image
        self.arguments = plan.arguments
        self.compute_profile = plan.compute_profile
        self.gpus = plan.gpus
        self.model_name = plan.model_name
        self.active_deadline_seconds = plan.active_deadline_seconds
        # SIGTERM (preemption, eviction, a cleared task) to SIGKILL: the trainer checkpoints in between.
        self.termination_grace_period = settings.training_termination_grace_seconds
        self.retry_application_failures = bool(params.get("retry_on_training_failure"))
        self.add_env(
            {
                "RUN_ID": context["run_id"],
                "MODEL_NAME": plan.model_name,
                "MODEL_VERSION": plan.model_version,
                "ARTIFACT_URI": plan.artifact_uri,
                "CHECKPOINT_URI": plan.checkpoint_uri,
                "TRAINER_IMAGE": plan.image,
                "AWS_ENDPOINT_URL": plan.s3_endpoint,
            }
        )
        # No Secret set: no static keys, so the SDK uses the service account's web identity (IRSA);
        # keys in the environment would win over it.
        self.secret_env = (
            {
                "AWS_ACCESS_KEY_ID": (plan.s3_secret, "aws_access_key_id"),
                "AWS_SECRET_ACCESS_KEY": (plan.s3_secret, "aws_secret_access_key"),
            }
            if plan.s3_secret
            else {}
        )
        context["ti"].xcom_push(key="plan", value=plan.as_dict())

    def execute(self, context: Any) -> Any:
        self.prepare(context)
        self._resolve_runtime()
        self._wait_for_gpus(context)
        try:
            result = super().execute(context)
        except Exception as exc:
            from mlops.training.gpu_wait import is_quota_refusal

            if is_quota_refusal(exc):  # another run took the GPUs between our look and the create
                self._defer_for_gpus(context, f"the pod was refused: {str(exc).splitlines()[0][:300]}")
            raise
        push_image_id(self, context)
        return result

    def resume_after_gpu_wait(self, context: Any, event: Any = None) -> Any:
        """Where a deferred GPU wait comes back: look again, then run (or wait on)."""
        return self.execute(context)

    def _wait_for_gpus(self, context: Any) -> None:
        from mlops.training.gpu_wait import quota_shortfall

        try:
            short = quota_shortfall(
                self.client, self.namespace, int(self.gpus or 0), self.priority_class_name
            )
        except Exception as exc:  # no permission to read quotas: creation's 403 still makes us wait
            self.log.warning(
                "cannot read the GPU quota of %s (%s); trying to create the pod", self.namespace, exc
            )
            return
        if short is not None:
            self._defer_for_gpus(
                context,
                f"quota {short.quota} in namespace {self.namespace} has {short.free} of {short.hard} "
                f"GPUs free (held by {', '.join(short.holders) or 'no pod'})",
            )

    def _defer_for_gpus(self, context: Any, why: str) -> None:
        from datetime import UTC, datetime, timedelta

        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        settings = get_settings()
        ti = context["ti"]
        started_text = ti.xcom_pull(task_ids=self.task_id, key="gpu_wait_started")
        now = datetime.now(UTC)
        started = datetime.fromisoformat(started_text) if started_text else now
        if not started_text:
            ti.xcom_push(key="gpu_wait_started", value=now.isoformat())
        budget = timedelta(minutes=int(context["params"].get("gpu_wait_minutes") or 0))
        if now - started >= budget:
            raise AirflowFailException(
                f"gpus: waited {(now - started).total_seconds() / 60:.0f} of gpu_wait_minutes="
                f"{budget.total_seconds() / 60:.0f} for {self.gpus} GPU(s) and they never came free: {why}"
            )
        poll = settings.training_gpu_wait_poll_seconds
        self.log.info(
            "waiting for %s GPU(s): %s. Looking again in %.0f s (deferred: no worker slot, no retry spent); "
            "the wait ends at %s",
            self.gpus,
            why,
            poll,
            (started + budget).isoformat(timespec="seconds"),
        )
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=poll)), method_name="resume_after_gpu_wait")


def push_image_id(operator: PlatformPodOperator, context: Any) -> None:
    """After success: push the finished pod's ``imageID`` (the digest that really ran) to XCom
    under ``image_id``, for the candidate's lineage. Reads only the pod ``cleanup`` last saw."""
    from mlops.training.lineage import image_id_of

    image_id = image_id_of(operator._final_pod, operator.base_container_name or "base")
    context["ti"].xcom_push(key="image_id", value=image_id)
