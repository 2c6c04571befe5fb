"""The harness's real servers, used through the project's own code paths."""

from __future__ import annotations

import subprocess

import pytest

from tests.harness.postgres import PG_BIN


def test_s3_hook_puts_and_gets_an_object_through_the_connection_endpoint(s3_conn, s3_bucket, s3_client):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id="aws_default")
    hook.load_string("hello from airflow", key="greeting.txt", bucket_name=s3_bucket)

    assert hook.read_key("greeting.txt", bucket_name=s3_bucket) == "hello from airflow"
    # The object really landed on the server behind endpoint_url, not in an in-process mock.
    assert s3_client.get_object(Bucket=s3_bucket, Key="greeting.txt")["Body"].read() == b"hello from airflow"


def test_postgres_dump_restore_round_trip_keeps_rows(pg_cluster, pg_database, tmp_path):
    pg_cluster.execute("CREATE TABLE models (id int primary key, name text)", pg_database)
    pg_cluster.execute("INSERT INTO models SELECT g, 'm' || g FROM generate_series(1, 250) g", pg_database)
    dump = tmp_path / "db.dump"
    subprocess.run([str(PG_BIN / "pg_dump"), "-Fc", "-f", str(dump), pg_cluster.dsn(pg_database)], check=True)
    target = pg_cluster.create_database("restore")
    subprocess.run(
        [str(PG_BIN / "pg_restore"), "--no-owner", "-d", pg_cluster.dsn(target), str(dump)], check=True
    )

    import psycopg

    with psycopg.connect(pg_cluster.dsn(target)) as conn:
        rows = conn.execute("SELECT count(*), max(name) FROM models").fetchone()
    assert rows == (250, "m99")


def test_each_test_gets_its_own_database(pg_cluster, pg_database):
    import psycopg

    with psycopg.connect(pg_cluster.dsn(pg_database)) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)


def test_slack_receiver_records_json_and_injects_errors(slack):
    import requests

    slack.fail_next(500)
    first = requests.post(f"{slack.url}/services/T/B/X", json={"text": "a"}, timeout=5)
    second = requests.post(f"{slack.url}/services/T/B/X", json={"text": "b"}, timeout=5)
    assert (first.status_code, second.status_code) == (500, 200)
    assert slack.bodies() == [{"text": "a"}, {"text": "b"}]


def test_pagerduty_receiver_serves_https_only_with_its_own_ca(pagerduty):
    import requests

    assert pagerduty.url.startswith("https://")
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(f"{pagerduty.url}/v2/enqueue", json={}, timeout=5)
    ok = requests.post(
        f"{pagerduty.url}/v2/enqueue", json={"dedup_key": "k"}, timeout=5, verify=pagerduty.ca_path
    )
    assert ok.status_code == 202 and ok.json()["dedup_key"] == "k"


def test_pushgateway_metrics_reach_prometheus_with_the_pushed_labels(pushgateway, tmp_path):
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

    from tests.harness.prometheus import PROMETHEUS, query_until, running_prometheus
    from tests.harness.pushgateway import pushgateway_target

    assert PROMETHEUS, "Debian's prometheus package is needed (make system-deps)"
    registry = CollectorRegistry()
    Gauge("harness_probe_value", "a harness probe", registry=registry).set(42)
    pushadd_to_gateway(
        pushgateway, job="harness-probe", registry=registry, grouping_key={"case": tmp_path.name}
    )

    with running_prometheus(tmp_path, {}, scrape_configs=[pushgateway_target(pushgateway)]) as prom:
        [series] = query_until(prom, f'harness_probe_value{{case="{tmp_path.name}"}}')
    # honor_labels kept the pushed job label instead of the scrape job's name ("pushgateway").
    assert series["metric"]["job"] == "harness-probe"
    assert float(series["value"][1]) == 42
