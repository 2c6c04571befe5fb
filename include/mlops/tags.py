"""The fixed tag vocabulary. A policy test rejects any DAG tag not listed here."""

from __future__ import annotations

# Capability tags: exactly one per DAG.
TRAINING = "training"
PROMOTION = "promotion"
BACKUP = "backup"
HEALTH = "health"

# Qualifiers.
GPU = "gpu"
KUBERNETES = "kubernetes"
S3 = "s3"
POSTGRES = "postgres"
ALERTING = "alerting"
SCHEDULED = "scheduled"
API_TRIGGERED = "api-triggered"

CAPABILITIES = frozenset({TRAINING, PROMOTION, BACKUP, HEALTH})
VOCABULARY = CAPABILITIES | frozenset({GPU, KUBERNETES, S3, POSTGRES, ALERTING, SCHEDULED, API_TRIGGERED})
