"""The README's restore procedure (globals, then each database), run exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from datetime import date
from pathlib import Path

import psycopg

from mlops.backups.tasks import backup_postgres, backup_server_globals, verify_postgres, verify_server_globals
from tests.conftest import REPO_ROOT
from tests.harness.postgres import PG_BIN

BLOCK = re.compile(r"<!-- restore-procedure -->\s*```sh\n(.*?)```\s*<!-- /restore-procedure -->", re.S)


def readme_procedure() -> str:
    (block,) = BLOCK.findall((REPO_ROOT / "README.md").read_text())
    return block


def test_the_readme_restore_procedure_brings_back_roles_rows_and_grants(
    seeded_db, pg_cluster, backup_bucket, pg_bin, verify_conn, s3_server, session_dir
):
    role = f"analyst_{uuid.uuid4().hex[:8]}"
    pg_cluster.execute(f"CREATE ROLE {role} NOLOGIN")
    pg_cluster.execute(f"GRANT SELECT ON models TO {role}", seeded_db)
    day = date(2026, 3, 1)
    restored = verify_server_globals(backup_server_globals(day, dry_run=False))
    verify_postgres(backup_postgres(seeded_db, day, "scheduled", False), globals_restored=restored)

    # An empty server, as after the loss of the source.
    from tests.harness.postgres import PostgresCluster

    target = PostgresCluster(session_dir / f"pg-restore-{uuid.uuid4().hex[:6]}").start()
    try:
        script = readme_procedure()
        script = script.replace("BUCKET=mlops-backups", f"BUCKET={backup_bucket}")
        script = script.replace('DATABASES="platform"', f'DATABASES="{seeded_db}"')
        env = {
            **os.environ,
            "PATH": f"{PG_BIN}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PGHOST": target.host,
            "PGPORT": str(target.port),
            "PGUSER": target.user,
            "AWS_ENDPOINT_URL": s3_server,
        }
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr

        with psycopg.connect(target.dsn(seeded_db)) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM models), (SELECT count(*) FROM runs), "
                '(SELECT count(*) FROM registry."Stage Names")'
            ).fetchone()
            granted = conn.execute("SELECT has_table_privilege(%s, 'models', 'SELECT')", (role,)).fetchone()[
                0
            ]
            not_granted = conn.execute(
                "SELECT has_table_privilege(%s, 'runs', 'SELECT')", (role,)
            ).fetchone()[0]
        assert counts == (250, 1200, 3)
        assert (granted, not_granted) == (True, False)  # the role came back first, then its grants
    finally:
        target.stop()
