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
    """A named resource shape.

    CPU, memory and ``/dev/shm`` scale with the GPU count (``*_per_gpu``; a CPU-only
    profile uses ``cpu``/``memory``/``shm`` as they are), so a 1-GPU run on a large node
    does not reserve the whole node. Requests equal limits for every resource: the pod
    is in the Guaranteed QoS class (last to be evicted under node pressure, and given
    exclusive cores by a static CPU manager), and GPU requests must equal limits anyway.
    """

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
    shm: str = "1Gi"

    def validate_gpus(self, gpus: int | None) -> int:
        """Return the GPU count to use, or raise ``ValueError`` naming the ``gpus`` field."""
        count = self.default_gpus if gpus is None else int(gpus)
        if not self.min_gpus <= count <= self.max_gpus:
            raise ValueError(
                f"gpus: profile {self.name!r} allows {self.min_gpus}..{self.max_gpus} GPUs, got {count}"
            )
        return count

    def shape(self, gpus: int | None = None) -> dict[str, str]:
        """The pod's per-run amounts: ``cpu``, ``memory``, ``shm`` and ``gpus`` (CPU/memory per GPU)."""
        count = self.validate_gpus(gpus)
        scale = max(count, 1)
        return {
            "cpu": _scaled(self.cpu, scale),
            "memory": _scaled(self.memory, scale),
            "shm": _scaled(self.shm, scale),
            "gpus": str(count),
        }

    def resources(self, gpus: int | None = None) -> k8s.V1ResourceRequirements:
        """Requests and limits for the main container (equal: Guaranteed QoS)."""
        from kubernetes.client import models as k8s

        shape = self.shape(gpus)
        amounts = {"cpu": shape["cpu"], "memory": shape["memory"]}
        amounts["ephemeral-storage"] = self.ephemeral_storage
        if int(shape["gpus"]):
            amounts[GPU_RESOURCE] = shape["gpus"]
        # Memory limit == request: a trainer that overruns is OOM-killed instead of starving neighbours.
        # CPU limit == request: without it the pod is Burstable, evicted before Guaranteed ones.
        return k8s.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts))

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
            cpu="8",  # per GPU
            memory="32Gi",  # per GPU
            shm="4Gi",  # per GPU
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
            # Per GPU: eight of them fill a 32-core, 240 GiB node share, as the profile did before.
            cpu="4",
            memory="30Gi",
            shm="8Gi",
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
            cpu="8",  # per GPU
            memory="32Gi",  # per GPU
            shm="4Gi",  # per GPU
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


def _scaled(quantity: str, factor: int) -> str:
    """``"4"`` x 2 -> ``"8"``; ``"30Gi"`` x 2 -> ``"60Gi"`` (integers with an optional binary suffix)."""
    number = quantity.rstrip("KMGTPEi")
    return f"{int(number) * factor}{quantity[len(number) :]}"


def get_profile(name: str) -> ComputeProfile:
    """Return the named profile, or raise ``ValueError`` listing the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"compute_profile: unknown profile {name!r}; choose one of {list(PROFILES)}"
        ) from None
