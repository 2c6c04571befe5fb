"""Every name the kind workflow (.github/workflows/e2e-kind.yml) uses is one the code, the values or the
chart (1.22.0) reads: Secrets and their keys, connection ids, buckets, images, namespaces, REST params.
The workflow itself needs Docker and runs only on GitHub; this is what can be checked here."""

from __future__ import annotations

import json
import re
import shlex
from urllib.parse import urlparse

import yaml

from mlops.promotion.manifests import render
from mlops.promotion.manifests.render import ServingSpec
from mlops.settings import Settings
from tests.harness.platform_cluster import DEV_S3_CREDENTIALS
from tests.unit.deploy.chart import rendered_values
from tests.unit.deploy.conftest import HELM_VALUES, PLATFORM, WORKFLOWS

WORKFLOW = yaml.safe_load((WORKFLOWS / "e2e-kind.yml").read_text())
SCRIPT = "\n".join(step.get("run", "") for step in WORKFLOW["jobs"]["e2e"]["steps"])
DEV = rendered_values(HELM_VALUES / "values.yaml", HELM_VALUES / "values-dev.yaml")
DEV_ENV = {e["name"]: e["value"] for e in DEV["env"]}


def _secrets() -> dict[tuple[str, str], dict[str, str]]:
    """``kubectl -n NS create secret generic NAME --from-literal=KEY=VALUE ...`` commands, joined lines."""
    joined = SCRIPT.replace("\\\n", " ")
    out = {}
    for line in joined.splitlines():
        if "create secret generic" not in line:
            continue
        words = shlex.split(line.strip(), posix=True)
        ns = words[words.index("-n") + 1]
        name = words[words.index("generic") + 1]
        literals = [w.split("=", 1)[1] for w in words if w.startswith("--from-literal=")]
        out[(ns, name)] = dict(lit.split("=", 1) for lit in literals)
    return out


def _serving_secret_keys() -> set[str]:
    spec = ServingSpec("m", "blue", "v1", "i:1", "s3://b/k", "ml-serving", s3_secret="s")
    pod = render.deployment(spec)["spec"]["template"]["spec"]
    return {
        e["valueFrom"]["secretKeyRef"]["key"]
        for c in pod["containers"]
        for e in c.get("env") or []
        if "valueFrom" in e
    }


def test_the_s3_secrets_have_the_names_and_keys_the_pods_read():
    secrets = _secrets()
    settings = Settings()
    serving = secrets[(settings.serving_namespace, DEV_ENV["MLOPS_MODEL_SERVER_S3_SECRET"])]
    assert set(serving) == _serving_secret_keys()
    training = secrets[(settings.training_namespace, settings.trainer_s3_secret)]
    assert set(training) == set(DEV_S3_CREDENTIALS) == _serving_secret_keys()


def test_the_airflow_secrets_are_the_ones_the_values_name_with_the_charts_keys():
    secrets = {name: keys for (ns, name), keys in _secrets().items() if ns == "airflow"}
    # Keys as the chart reads them (templates/_helpers.yaml, secrets/*): connection, fernet-key, ...
    assert set(secrets[DEV["data"]["metadataSecretName"]]) == {"connection"}
    assert set(secrets[DEV["fernetKeySecretName"]]) == {"fernet-key"}
    assert set(secrets[DEV["apiSecretKeySecretName"]]) == {"api-secret-key"}
    assert set(secrets[DEV["jwtSecretName"]]) == {"jwt-secret"}
    (env_from,) = yaml.safe_load(DEV["extraEnvFrom"])
    connections = secrets[env_from["secretRef"]["name"]]
    settings = Settings()
    assert set(connections) == {
        f"AIRFLOW_CONN_{settings.aws_conn_id.upper()}",
        f"AIRFLOW_CONN_{settings.kubernetes_conn_id.upper()}",
    }
    for value in connections.values():
        json.loads(value.replace('\\"', '"').replace("${S3}", "http://s3"))


def test_the_buckets_created_are_the_ones_the_dev_values_use():
    created = set(re.findall(r"for bucket in ([\w\s-]+); do", SCRIPT)[0].split())
    logs = urlparse(DEV["config"]["logging"]["remote_base_log_folder"]).netloc
    assert created == {DEV_ENV["MLOPS_ARTIFACTS_BUCKET"], DEV_ENV["MLOPS_BACKUP_BUCKET"], logs}


def test_helm_wait_does_not_wait_on_its_own_post_install_hooks():
    assert "--wait" in SCRIPT
    assert DEV["migrateDatabaseJob"]["useHelmHooks"] is False
    assert DEV["createUserJob"]["useHelmHooks"] is False
    assert DEV["createUserJob"]["enabled"] is True
    user = DEV["createUserJob"]["defaultUser"]
    assert '"username": "admin", "password": "admin"' in SCRIPT
    assert (user["username"], user["password"]) == ("admin", "admin")
    assert (
        '--version "$AIRFLOW_CHART_VERSION"' in SCRIPT
        and WORKFLOW["env"]["AIRFLOW_CHART_VERSION"] == "1.22.0"
    )


def test_the_namespaces_come_from_the_platform_manifests_and_the_images_from_the_dev_tag():
    shipped = {
        d["metadata"]["name"]
        for d in yaml.safe_load_all((PLATFORM / "00-namespaces.yaml").read_text())
        if d and d["kind"] == "Namespace"
    }
    created = set(re.findall(r"kubectl create namespace (\S+)", SCRIPT))
    assert not created & shipped, "a namespace of the platform manifests must come from them (labels)"
    conf = json.loads(WORKFLOW["env"]["TRAINING_CONF"])
    assert conf["image"].endswith(f":{DEV['defaultAirflowTag']}")
    assert f"svc/{'airflow'}-api-server" in SCRIPT  # release `airflow`: the chart's fullname is `airflow`


def test_the_rest_confs_use_only_the_dags_params():
    from mlops.promotion.params import promotion_params
    from mlops.training.params import training_params

    assert set(json.loads(WORKFLOW["env"]["TRAINING_CONF"])) <= set(training_params())
    assert set(json.loads(WORKFLOW["env"]["PROMOTION_CONF"])) <= set(promotion_params())
