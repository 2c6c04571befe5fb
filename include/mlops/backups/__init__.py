"""Backups to S3: streamed Postgres dumps, model artifact sync, Kubernetes config export.

One module per concern:

- ``layout``: where every object lives in the backup bucket (keys by database and date).
- ``s3``: the S3 client from the Airflow connection, SSE arguments, bucket checks.
- ``postgres``: ``pg_dump`` streamed into a multipart upload, sha256 and manifest.
- ``manifest``: the manifest JSON written beside each dump.
- ``verify``: download + sha256 check + ``pg_restore`` into a throwaway database, markers.
- ``artifacts``: checksum-based, server-side, parallel artifact sync.
- ``kube_export``: clean, re-appliable YAML of the platform namespaces.
- ``retention``: grandfather-father-son selection (pure) and its S3 applier.

Submodules import boto3, psycopg and kubernetes lazily where they can, so that
DAG files may import this package cheaply.
"""
