"""The trainer's configuration contract: arguments, run context from the environment, validation."""

from __future__ import annotations

import pytest

from mlops.trainer.config import BUILTIN_DIGITS, ConfigError, load_config, split_s3_uri

POD_ENV = {
    "RUN_ID": "manual__2026-11-27T10:00:00+00:00",
    "MODEL_NAME": "digits-mlp",
    "MODEL_VERSION": "v20261127t100000-1a2b3c4d",
    "ARTIFACT_URI": "s3://mlops-artifacts/models/digits-mlp/versions/v20261127t100000-1a2b3c4d/",
    "CHECKPOINT_URI": "s3://mlops-artifacts/models/digits-mlp/checkpoints/v20261127t100000-1a2b3c4d/",
    "TRAINER_IMAGE": "ghcr.io/mlops-airflow/trainer:0.1.0",
    "GIT_SHA": "0982c52",
}


def test_the_pod_contract_yields_a_complete_config():
    config = load_config(
        [
            "--epochs",
            "7",
            "--learning-rate",
            "0.01",
            "--batch-size",
            "32",
            "--seed",
            "5",
            "--checkpoint-every",
            "2",
            "--dataset-uri",
            BUILTIN_DIGITS,
            "--hidden-units=64",
        ],
        POD_ENV,
    )
    assert (config.epochs, config.learning_rate, config.batch_size, config.seed) == (7, 0.01, 32, 5)
    assert (config.checkpoint_every, config.hidden_units) == (2, 64)
    assert config.artifact_uri == POD_ENV["ARTIFACT_URI"]
    assert config.checkpoint_uri == POD_ENV["CHECKPOINT_URI"]
    assert (config.run_id, config.model_name, config.model_version) == (
        POD_ENV["RUN_ID"],
        "digits-mlp",
        POD_ENV["MODEL_VERSION"],
    )
    assert (config.image, config.git_sha, config.output_dir) == (POD_ENV["TRAINER_IMAGE"], "0982c52", None)
    assert config.hyperparameters()["learning_rate"] == 0.01


def test_output_dir_mode_needs_no_environment_and_defaults_the_run_context(tmp_path):
    config = load_config(["--output-dir", str(tmp_path), "--skip-onnx"], {})
    assert config.artifact_uri == str(tmp_path)
    assert config.checkpoint_uri == str(tmp_path / "checkpoints")
    assert (config.run_id, config.model_name, config.model_version) == ("local", "digits-mlp", "dev")
    assert config.skip_onnx and config.image is None


@pytest.mark.parametrize(
    ("argv", "env_change", "message"),
    [
        (["--epochs", "0"], {}, "epochs: must be between 1 and 100000, got 0"),
        (["--epochs", "three"], {}, "epochs: expected an integer, got 'three'"),
        (["--learning-rate", "0"], {}, "learning_rate: must be greater than 0.0"),
        (["--learning-rate", "-0.1"], {}, "learning_rate: must be greater than 0.0"),
        (["--learning-rate", "nan"], {}, "learning_rate: must be a finite number"),
        (["--batch-size", "0"], {}, "batch_size: must be between 1 and 65536"),
        (["--checkpoint-every", "-1"], {}, "checkpoint_every: must be between 0"),
        (["--test-fraction", "0.95"], {}, "test_fraction: must be greater than 0.0 and at most 0.9"),
        (["--device", "tpu"], {}, "device: invalid choice: 'tpu'"),
        (["--frobnicate=3"], {}, "arguments: unknown --frobnicate=3"),
        (["--skip-onnx"], {}, "skip_onnx: only allowed with --output-dir"),
        (
            ["--dataset-uri", "builtin://mnist"],
            {},
            "dataset_uri: the only bundled dataset is builtin://sklearn/digits",
        ),
        (
            ["--dataset-uri", "/data/x.npz"],
            {},
            "dataset_uri: expected builtin://sklearn/digits or an s3:// URI",
        ),
        ([], {"RUN_ID": None}, "RUN_ID: environment variable is not set"),
        ([], {"MODEL_VERSION": ""}, "MODEL_VERSION: environment variable is not set"),
        ([], {"MODEL_NAME": "Digits/MLP"}, "MODEL_NAME: 'Digits/MLP' must be 1-63 lowercase"),
        ([], {"ARTIFACT_URI": "models/x/"}, "ARTIFACT_URI: expected s3://bucket/prefix/, got 'models/x/'"),
        (
            [],
            {"ARTIFACT_URI": "s3://Bad_Bucket/x/"},
            "ARTIFACT_URI: 'Bad_Bucket' is not a valid S3 bucket name",
        ),
        (
            [],
            {"CHECKPOINT_URI": "s3://bucket/a/../b/"},
            "CHECKPOINT_URI: 'a/../b/' is not a safe S3 key prefix",
        ),
        ([], {"CHECKPOINT_URI": "https://bucket/x"}, "CHECKPOINT_URI: expected s3://bucket/prefix/"),
    ],
)
def test_bad_input_raises_a_config_error_naming_the_field(argv, env_change, message):
    env = {k: v for k, v in {**POD_ENV, **env_change}.items() if v is not None}
    with pytest.raises(ConfigError) as excinfo:
        load_config(argv, env)
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_s3_uris_split_into_bucket_and_a_slash_terminated_prefix():
    assert split_s3_uri("s3://b-1.x/models/m/v1", "f") == ("b-1.x", "models/m/v1/")
    assert split_s3_uri("s3://bucket/", "f") == ("bucket", "")
