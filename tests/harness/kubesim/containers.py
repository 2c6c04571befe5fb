"""Container environment and argv resolution, following the Kubernetes rules."""

from __future__ import annotations

import base64
import re

from .resources import resource_for
from .store import Store

SECRETS, CONFIGMAPS = resource_for("Secret"), resource_for("ConfigMap")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


# The reference grammar of github.com/distribution/reference (regexp.go), which the kubelet applies
# before pulling: path components are lower case; a tag is at most 128 word characters, dots and dashes.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_IMAGE_REFERENCE = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::\w[\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


def valid_image_reference(image: str) -> bool:
    """Whether the kubelet can parse ``image`` (otherwise the container waits in InvalidImageName)."""
    return bool(_IMAGE_REFERENCE.fullmatch(image))


class ConfigError(Exception):
    """A referenced Secret/ConfigMap (or key) is missing: the kubelet's CreateContainerConfigError."""


def expand(value: str, env: dict[str, str]) -> str:
    """Expand ``$(VAR)`` references from ``env``; unknown ones stay as written and ``$$`` escapes ``$``."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, value)


def build_argv(entrypoint: list[str] | None, command: list[str] | None, args: list[str] | None) -> list[str]:
    """Docker/Kubernetes ENTRYPOINT/CMD rules, with ``entrypoint`` as ENTRYPOINT and no CMD.

    ``command`` replaces the entrypoint (and the image CMD); ``args`` replace the CMD.
    """
    if command:
        return list(command) + list(args or [])
    return list(entrypoint or []) + list(args or [])


def _decode(data: dict, key: str) -> str:
    return base64.b64decode(data[key]).decode()


def _lookup(store: Store, kind: str, namespace: str, name: str, optional: bool) -> dict | None:
    res = SECRETS if kind == "Secret" else CONFIGMAPS
    obj = store.get(res, namespace, name)
    if obj is None and not optional:
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    return obj


def _key_ref(store: Store, pod: dict, kind: str, ref: dict) -> str | None:
    namespace = pod["metadata"]["namespace"]
    optional = bool(ref.get("optional"))
    obj = _lookup(store, kind, namespace, ref.get("name", ""), optional)
    if obj is None:
        return None
    if kind == "Secret":
        if ref["key"] in (obj.get("data") or {}):
            return _decode(obj["data"], ref["key"])
    elif ref["key"] in (obj.get("data") or {}):
        return obj["data"][ref["key"]]
    if optional:
        return None
    raise ConfigError(f"couldn't find key {ref['key']} in {kind} {namespace}/{ref.get('name')}")


def _field_ref(pod: dict, path: str) -> str:
    if m := _LABEL_REF.match(path):
        return str((pod["metadata"].get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "metadata.uid": pod["metadata"].get("uid"),
        "spec.nodeName": pod["spec"].get("nodeName"),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    return str(simple.get(path) or "")


def resolve_env(store: Store, pod: dict, container: dict) -> dict[str, str]:
    """The container's own environment: envFrom first, then env (with $(VAR) expansion) on top."""
    env: dict[str, str] = {}
    namespace = pod["metadata"]["namespace"]
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = source.get(field)
            if ref is None:
                continue
            obj = _lookup(store, kind, namespace, ref.get("name", ""), bool(ref.get("optional")))
            for key in (obj or {}).get("data") or {}:
                env[prefix + key] = _decode(obj["data"], key) if kind == "Secret" else obj["data"][key]
    for var in container.get("env") or []:
        value_from = var.get("valueFrom")
        if value_from is None:
            env[var["name"]] = expand(str(var.get("value", "")), env)
            continue
        value: str | None = ""
        if "secretKeyRef" in value_from:
            value = _key_ref(store, pod, "Secret", value_from["secretKeyRef"])
        elif "configMapKeyRef" in value_from:
            value = _key_ref(store, pod, "ConfigMap", value_from["configMapKeyRef"])
        elif "fieldRef" in value_from:
            value = _field_ref(pod, value_from["fieldRef"].get("fieldPath", ""))
        if value is not None:
            env[var["name"]] = value
    return env
