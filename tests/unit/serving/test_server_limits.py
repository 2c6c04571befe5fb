"""How many inference threads the server runs (its CPU limit) and which settings it accepts."""

from __future__ import annotations

import os

import pytest

from mlops.serving.app import ServerConfig
from mlops.serving.limits import cgroup_cpu_quota, cpu_limit

CORES = len(os.sched_getaffinity(0))


def _cgroup(tmp_path, **files: str):
    for name, text in files.items():
        path = tmp_path / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "50000 100000\n"}, 0.5),
        ({"cpu__cpu.cfs_quota_us": "200000\n", "cpu__cpu.cfs_period_us": "100000\n"}, 2.0),
        ({"cpu__cpu.cfs_quota_us": "-1\n", "cpu__cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
    ids=["v2-unlimited", "v2-1.5", "v2-0.5", "v1-2", "v1-unlimited", "none"],
)
def test_the_cgroup_quota_is_read_from_v2_and_v1_files(tmp_path, files, quota):
    assert cgroup_cpu_quota(_cgroup(tmp_path, **files)) == quota


def test_the_thread_count_is_the_quota_rounded_up_within_the_affinity(tmp_path):
    assert cpu_limit(_cgroup(tmp_path, **{"cpu.max": "50000 100000"})) == 1
    assert cpu_limit(_cgroup(tmp_path, **{"cpu.max": "max 100000"})) == CORES
    assert cpu_limit(_cgroup(tmp_path, **{"cpu.max": f"{100000 * CORES + 1} 100000"})) == CORES


def test_inference_threads_default_to_the_cpu_limit_and_can_be_set():
    env = {"MODEL_NAME": "m", "MODEL_VERSION": "v1", "MODEL_URI": "s3://b/m/"}
    assert ServerConfig.from_env(env).threads() == cpu_limit()
    assert ServerConfig.from_env({**env, "INFERENCE_THREADS": "3"}).threads() == 3


def test_model_sha256_must_be_a_sha256_digest():
    env = {"MODEL_NAME": "m", "MODEL_VERSION": "v1", "MODEL_URI": "s3://b/m/"}
    digest = "ab" * 32
    assert ServerConfig.from_env({**env, "MODEL_SHA256": f"sha256:{digest.upper()}"}).model_sha256 == digest
    assert ServerConfig.from_env(env).model_sha256 is None
    with pytest.raises(ValueError, match="MODEL_SHA256 must be 64 hex digits"):
        ServerConfig.from_env({**env, "MODEL_SHA256": "latest"})
