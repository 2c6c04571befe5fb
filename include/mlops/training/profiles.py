"""Named compute profiles: the only way a DAG asks for CPUs, memory and GPUs.

A DAG names a profile (``cpu``, ``gpu-small``, ``gpu-large``, ``gpu-spot``); this
module resolves it to resources, node selector, tolerations, affinity and
priority class, so a node-pool change is made here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

GPU_RESOURCE = "nvidia.com/gpu"
POOL_LABEL = "mlops.io/pool"
GPU_CLASS_LABEL = "mlops.io/gpu-class"
CAPACITY_LABEL = "mlops.io/capacity"
SPOT_TAINT = "mlops.io/spot"


@dataclass(frozen=True)
class ComputeProfile:
    """A named resource shape. GPU requests always equal limits (extended resources require it)."""

    name: str
    cpu: str
    memory: str
    default_gpus: int
    min_gpus: int
    max_gpus: int
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    required_node_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    priority_class: str | None = None
    ephemeral_storage: str = "20Gi"

    def validate_gpus(self, gpus: int | None) -> int:
        """Return the GPU count to use, or raise ``ValueError`` naming the ``gpus`` field."""
        count = self.default_gpus if gpus is None else int(gpus)
        if not self.min_gpus <= count <= self.max_gpus:
            raise ValueError(
                f"gpus: profile {self.name!r} allows {self.min_gpus}..{self.max_gpus} GPUs, got {count}"
            )
        return count

    def resources(self, gpus: int | None = None) -> k8s.V1ResourceRequirements:
        """Requests and limits for the main container."""
        from kubernetes.client import models as k8s

        count = self.validate_gpus(gpus)
        requests = {"cpu": self.cpu, "memory": self.memory, "ephemeral-storage": self.ephemeral_storage}
        # Memory limit == request: a trainer that overruns is OOM-killed instead of starving neighbours.
        limits = {"memory": self.memory, "ephemeral-storage": self.ephemeral_storage}
        if count:
            requests[GPU_RESOURCE] = str(count)
            limits[GPU_RESOURCE] = str(count)
        return k8s.V1ResourceRequirements(requests=requests, limits=limits)

    def k8s_tolerations(self) -> list[k8s.V1Toleration]:
        from kubernetes.client import models as k8s

        return [k8s.V1Toleration(**t) for t in self.tolerations]

    def k8s_affinity(self) -> k8s.V1Affinity | None:
        from kubernetes.client import models as k8s

        if not self.required_node_labels:
            return None
        expressions = [
            k8s.V1NodeSelectorRequirement(key=key, operator="In", values=list(values))
            for key, values in sorted(self.required_node_labels.items())
        ]
        return k8s.V1Affinity(
            node_affinity=k8s.V1NodeAffinity(
                required_during_scheduling_ignored_during_execution=k8s.V1NodeSelector(
                    node_selector_terms=[k8s.V1NodeSelectorTerm(match_expressions=expressions)]
                )
            )
        )


_GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

PROFILES: dict[str, ComputeProfile] = {
    p.name: p
    for p in (
        ComputeProfile(
            name="cpu",
            cpu="2",
            memory="8Gi",
            default_gpus=0,
            min_gpus=0,
            max_gpus=0,
            node_selector={POOL_LABEL: "cpu"},
            priority_class="mlops-training",
        ),
        ComputeProfile(
            name="gpu-small",
            cpu="8",
            memory="32Gi",
            default_gpus=1,
            min_gpus=1,
            max_gpus=2,
            node_selector={POOL_LABEL: "gpu"},
            tolerations=(_GPU_TOLERATION,),
            required_node_labels={GPU_CLASS_LABEL: ("small", "large")},
            priority_class="mlops-training",
        ),
        ComputeProfile(
            name="gpu-large",
            cpu="32",
            memory="240Gi",
            default_gpus=8,
            min_gpus=1,
            max_gpus=8,
            node_selector={POOL_LABEL: "gpu"},
            tolerations=(_GPU_TOLERATION,),
            required_node_labels={GPU_CLASS_LABEL: ("large",)},
            priority_class="mlops-training",
            ephemeral_storage="200Gi",
        ),
        ComputeProfile(
            name="gpu-spot",
            cpu="8",
            memory="32Gi",
            default_gpus=1,
            min_gpus=1,
            max_gpus=4,
            node_selector={POOL_LABEL: "gpu", CAPACITY_LABEL: "spot"},
            tolerations=(
                _GPU_TOLERATION,
                {"key": SPOT_TAINT, "operator": "Equal", "value": "true", "effect": "NoSchedule"},
            ),
            required_node_labels={GPU_CLASS_LABEL: ("small", "large")},
            # Lower priority: spot work is the first to be preempted, and retried from its checkpoint.
            priority_class="mlops-training-preemptible",
        ),
    )
}

PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)


def get_profile(name: str) -> ComputeProfile:
    """Return the named profile, or raise ``ValueError`` listing the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"compute_profile: unknown profile {name!r}; choose one of {list(PROFILES)}"
        ) from None
