"""The README's "Deploy on Kubernetes" section is true to the letter: its commands, files, Secrets,
connection ids, value keys and the RBAC table are checked against the values, manifests and code."""

from __future__ import annotations

import re
import shlex

import yaml

from mlops.settings import Settings
from tests.unit.deploy.chart import CHART_VERSION, chart_defaults, rendered_values
from tests.unit.deploy.conftest import HELM_VALUES, PLATFORM, REPO
from tests.unit.deploy.test_kind_workflow import _serving_secret_keys

TEXT = (REPO / "README.md").read_text()
SECTION = TEXT[
    TEXT.index("## Deploy on Kubernetes") : TEXT.index("\n## ", TEXT.index("## Deploy on Kubernetes") + 5)
]
BLOCKS = re.findall(r"```bash\n(.*?)```", SECTION, flags=re.S)
COMMANDS = [
    c for block in BLOCKS for c in block.replace("\\\n", " ").splitlines() if c and not c.startswith("#")
]
BASE = rendered_values(HELM_VALUES / "values.yaml")


def test_every_file_the_section_names_exists():
    for path in set(re.findall(r"`((?:docker|helm-values|tests|\.github)/[\w./-]+)`", SECTION)):
        assert (REPO / path).exists(), path
    for name in set(re.findall(r"`(\d\d-[\w-]+\.yaml)`", SECTION)):
        assert (PLATFORM / name).exists(), name
    for command in COMMANDS:
        for path in re.findall(r"-f (\S+)", command):
            if not path.startswith("-"):
                assert (REPO / path).exists(), command


def test_the_secrets_it_creates_are_the_ones_the_values_and_code_read():
    settings = Settings()
    secrets = {}
    for command in COMMANDS:
        if "create secret generic" in command:
            words = shlex.split(command.replace("$(", "").replace(")", ""))
            keys = {
                w.removeprefix("--from-literal=").split("=", 1)[0]
                for w in words
                if w.startswith("--from-literal=")
            }
            secrets[(words[words.index("-n") + 1], words[words.index("generic") + 1])] = keys
    assert secrets[("airflow", BASE["data"]["metadataSecretName"])] == {"connection"}
    assert secrets[("airflow", BASE["fernetKeySecretName"])] == {"fernet-key"}
    assert secrets[("airflow", BASE["apiSecretKeySecretName"])] == {"api-secret-key"}
    assert secrets[("airflow", BASE["jwtSecretName"])] == {"jwt-secret"}
    (env_from,) = yaml.safe_load(BASE["extraEnvFrom"])
    connections = secrets[("airflow", env_from["secretRef"]["name"])]
    conn_ids = {settings.aws_conn_id, settings.kubernetes_conn_id, settings.postgres_conn_id,
                settings.slack_conn_id, settings.pagerduty_conn_id}  # fmt: skip
    assert connections == {f"AIRFLOW_CONN_{c.upper()}" for c in conn_ids}
    assert secrets[(settings.training_namespace, settings.trainer_s3_secret)] == _serving_secret_keys()
    assert secrets[(settings.serving_namespace, "mlops-model-server-s3")] == _serving_secret_keys()


def test_the_install_command_uses_the_chart_version_and_real_value_keys():
    (install,) = [c for c in COMMANDS if c.startswith("helm install")]
    assert f"--version {CHART_VERSION}" in install
    assert "--namespace airflow" in install
    defaults = chart_defaults()
    for key in re.findall(r"--set (\w[\w.]*)=", install):
        node = defaults
        for part in key.split("."):
            assert part in node, key
            node = node[part]
    assert "--set defaultAirflowTag=" in install  # the one value for all three images
    assert not any("kubectl create namespace" in c for c in COMMANDS), "the platform manifests create it"
    (first_user,) = [c for c in COMMANDS if "airflow users create" in c]
    assert "deploy/airflow-scheduler" in first_user  # release `airflow`: the chart's Deployment name


def _table_rows() -> list[tuple[str, str, str, str]]:
    rows, role, ns = [], "", ""
    for line in SECTION.splitlines():
        cells = (
            [c.strip() for c in line.strip().strip("|").split("|")]
            if line.strip().startswith("| `") or line.strip().startswith("| |")
            else None
        )
        if not cells or len(cells) != 4:
            continue
        if cells[0]:
            role = re.match(r"`([\w-]+)`", cells[0]).group(1)
        if cells[1]:
            ns = cells[1]
        rows.append((role, ns, cells[2].strip("`"), cells[3].strip("`")))
    return rows


def test_the_rbac_table_is_exactly_what_the_roles_grant():
    documented: dict[tuple[str, str], set[str]] = {}
    for role, ns, resources, verbs in _table_rows():
        for namespace in re.findall(r"`?([\w-]+)`?", ns):
            for resource in resources.split():
                documented[(role, namespace, resource)] = set(verbs.split())
    shipped: dict[tuple[str, str, str], set[str]] = {}
    for path in sorted(PLATFORM.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "Role":
                for rule in doc["rules"]:
                    for group in rule["apiGroups"]:
                        for resource in rule["resources"]:
                            key = (
                                doc["metadata"]["name"],
                                doc["metadata"]["namespace"],
                                f"{group}/{resource}".lstrip("/"),
                            )
                            shipped.setdefault(key, set()).update(rule["verbs"])
    assert documented == shipped
