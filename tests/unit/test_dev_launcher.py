"""`make run`'s choice of Kubernetes cluster."""

from __future__ import annotations


def test_the_default_mode_never_simulates_and_says_how_to_get_a_cluster(tmp_path):
    from mlops.dev.run import configure_kubernetes

    values, sim, messages = configure_kubernetes("auto", tmp_path, kubeconfig=str(tmp_path / "no-kubeconfig"))
    assert values == {} and sim is None
    assert "kind" in messages[0] and "CLUSTER=simulated" in messages[0]


def test_the_metadata_db_is_the_local_postgres_and_a_second_start_keeps_it(tmp_path, pg_cluster):
    import sqlalchemy

    from mlops.dev.run import metadata_db_url

    url = metadata_db_url(pg_cluster, tmp_path)
    assert url == f"postgresql+psycopg2://{pg_cluster.user}@{pg_cluster.host}:{pg_cluster.port}/airflow"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE IF NOT EXISTS kept (id int)"))
    assert metadata_db_url(pg_cluster, tmp_path) == url  # a second `make run` reuses the database
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT count(*) FROM kept")).scalar() == 0
    engine.dispose()
    assert metadata_db_url(None, tmp_path) == f"sqlite:///{tmp_path}/airflow.db"


def test_the_simulated_demo_says_its_dags_are_unpaused_and_the_default_says_what_to_do_first():
    from mlops.dev.run import PLATFORM_DAGS, next_steps

    assert PLATFORM_DAGS == (
        "mlops_backups",
        "mlops_health",
        "mlops_promotion",
        "mlops_rollback",
        "mlops_training",
    )
    simulated = "\n".join(next_steps(True, 8080))
    assert "UNPAUSED" in simulated and "mlops_training" in simulated
    assert "http://localhost:8080/mlops/ui/" in simulated
    default = "\n".join(next_steps(False, 8080))
    assert "PAUSED" in default and "Unpause on trigger" in default
    assert "CLUSTER=simulated" in default
