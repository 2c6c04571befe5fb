"""Throwaway PostgreSQL clusters; the implementation is shared with `make run` (mlops.dev.postgres)."""

from mlops.dev.postgres import PG_BIN, PostgresCluster

__all__ = ["PG_BIN", "PostgresCluster"]
