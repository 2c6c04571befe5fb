"""What a container of a given image does when the simulated kubelet runs it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class ScriptedContainer:
    """A container that prints ``logs`` over ``run_seconds`` and exits with ``exit_code``.

    ``start_delay`` keeps it in ContainerCreating that long first. ``pull_error`` (e.g. "ErrImagePull")
    makes the image unpullable: the container waits in that reason, then ImagePullBackOff, forever;
    ``pull_message`` replaces the registry's answer (by default "not found", as for a tag that does not
    exist; e.g. "503 Service Unavailable" for a registry outage). ``oom_killed`` ends the script the way
    the kernel's OOM killer does at the memory limit: exit 137, reason OOMKilled.
    """

    logs: list[str] = field(default_factory=list)
    exit_code: int = 0
    run_seconds: float = 0.2
    start_delay: float = 0.0
    pull_error: str | None = None
    pull_message: str | None = None
    oom_killed: bool = False


@dataclass
class LocalProcess:
    """A container run as a real local subprocess.

    ``argv`` plays the image's ENTRYPOINT (the image has no CMD); the pod's ``command``/``args`` apply on
    top of it as Kubernetes documents. ``env`` is added to this process's environment. With ``ports``,
    every declared containerPort gets a free local port, exported as ``PORT`` (the first one) and
    ``KUBESIM_PORT_<containerPort>``.
    """

    argv: list[str] | None = None
    env: dict[str, str] | None = None
    cwd: str | None = None
    ports: bool = True


Behaviour = ScriptedContainer | LocalProcess


def _strip_tag(image: str) -> str:
    image = image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


class ImageRegistry:
    """Behaviours keyed by image reference: exact match first, then a match ignoring tag and digest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._images: dict[str, Behaviour] = {}

    def register(self, image: str, behaviour: Behaviour) -> None:
        with self._lock:
            self._images[image] = behaviour

    def resolve(self, image: str) -> Behaviour | None:
        """The behaviour for ``image``, or ``None`` when the image is unknown (unpullable)."""
        with self._lock:
            if image in self._images:
                return self._images[image]
            bare = _strip_tag(image)
            for known, behaviour in self._images.items():
                if _strip_tag(known) == bare:
                    return behaviour
            return None

    def clear(self) -> None:
        with self._lock:
            self._images.clear()
