"""The Pod Security Standards' "restricted" profile, checked on a pod spec as the admission plugin does.

Hand-written: the reference implementation is Go (k8s.io/pod-security-admission, policy/check_*.go) and
no maintained port exists on PyPI, npm or Debian (searched: only an unmaintained one-off auditor), so the
checks of that package's v1.30 policy are transcribed here, each named as there. Pod-level fields count
for every container unless the container overrides them, as in the Go checks.
"""

from __future__ import annotations

from typing import Any

RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}  # fmt: skip
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip


def _containers(spec: dict) -> list[dict]:
    return [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """Every check of the restricted profile (baseline included) that ``spec`` (a PodSpec) fails."""
    problems: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    containers = _containers(spec)
    # baseline
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"hostNamespaces: {field}")
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("privileged"):
            problems.append(f"privileged: {name}")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            problems.append(f"capabilities_baseline: {name} adds {sorted(added - BASELINE_CAPABILITIES)}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            problems.append(f"hostPorts: {name}")
        if sc.get("procMount") not in (None, "Default"):
            problems.append(f"procMount: {name}")
        # restricted
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"allowPrivilegeEscalation: {name} must set it to false")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            problems.append(f"runAsNonRoot: {name}")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"runAsUser: {name} runs as uid 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"seccompProfile_restricted: {name}")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"capabilities_restricted: {name} must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"capabilities_restricted: {name} may add only NET_BIND_SERVICE")
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        problems.append("seccompProfile_baseline: pod")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"sysctls: {sysctl.get('name')}")
    if (pod_sc.get("runAsUser")) == 0:
        problems.append("runAsUser: pod runs as uid 0")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            problems.append(f"hostPathVolumes: {volume['name']}")
        if kinds - RESTRICTED_VOLUME_TYPES:
            problems.append(f"restrictedVolumes: {volume['name']} ({sorted(kinds)})")
    return problems
