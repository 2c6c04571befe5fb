"""Assets shared between DAGs: the training DAG produces model candidates, promotion consumes them."""

from __future__ import annotations

from airflow.sdk import Asset

# One event per registered candidate; extra = {"model", "version", "accuracy", "artifact_uri"}.
MODEL_CANDIDATES = Asset(name="model_candidates", uri="mlops://model-candidates", group="model")
