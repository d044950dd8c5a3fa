"""deploy/: the production files load, validate with Dagster's own schemas, agree with each
other, and work: a local PostgreSQL holds a real ingest run and an MLflow server's registry."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.config import pg_config
from dagster._core.workspace.config_schema import process_workspace_config
from dagster_k8s import K8sRunLauncher, k8s_job_executor

from lgsid_pipeline.defs.executor import (
    EXECUTOR_ENV,
    K8S_CONFIG_ENV,
    k8s_executor_config,
    pipeline_executor,
)

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD",
          "DAGSTER_PG_DB")
INGEST = "raw_items,raw_interactions,items,interactions"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def env_refs(value: Any) -> set[str]:
    """Names of the environment variables a Dagster config reads (``{env: NAME}``)."""
    if isinstance(value, Mapping):
        if set(value) == {"env"}:
            return {value["env"]}
        return set().union(*(env_refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(env_refs(v) for v in value)) if value else set()
    return set()


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def snake_keys(value: Any) -> Any:
    """Recursively snake_case mapping keys, as the chart's ``snakeCaseDictRecursive``."""
    if isinstance(value, Mapping):
        return {snake(k): snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake_keys(v) for v in value]
    return value


# ------------------------------------------------------------------ Helm values


def helm_values() -> dict[str, Any]:
    return load_yaml(DEPLOY / "helm" / "values.yaml")


def user_deployment(values: Mapping[str, Any]) -> dict[str, Any]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def deployment_env(values: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in user_deployment(values)["env"] if "value" in e}


def chart_run_launcher_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """The K8sRunLauncher config the chart renders from ``runLauncher`` (configmap-instance)."""
    launcher = dict(values["runLauncher"]["config"]["k8sRunLauncher"])
    chart = values["global"]
    config: dict[str, Any] = {
        "job_namespace": launcher.pop("jobNamespace", None) or "lgsid",
        "service_account_name": chart["serviceAccountName"],
        "dagster_home": chart["dagsterHome"],
        "instance_config_map": "dagster-instance",
        "postgres_password_secret": chart["postgresqlSecretName"],
        "env_config_maps": [m["name"] for m in launcher.pop("envConfigMaps", [])],
        "env_secrets": [s["name"] for s in launcher.pop("envSecrets", [])],
        "volume_mounts": snake_keys(launcher.pop("volumeMounts", [])),
        "volumes": snake_keys(launcher.pop("volumes", [])),
    }
    run_k8s = launcher.pop("runK8sConfig", None)
    if run_k8s is not None:
        config["run_k8s_config"] = {snake(k): v for k, v in run_k8s.items()}
    # Every other key maps one to one (a misspelt one reaches Dagster's schema and fails).
    config.update({snake(k): v for k, v in launcher.items()})
    return config


def chart_instance_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of the chart's instance dagster.yaml that deploy/dagster.yaml also sets."""
    pg = values["postgresql"]
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    concurrency = values["concurrency"]
    runs = dict(concurrency["runs"])
    limits = runs.pop("tagConcurrencyLimits", [])
    return {
        "storage": {"postgres": {"postgres_db": {
            "hostname": pg["postgresqlHost"], "username": pg["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"}, "db_name": pg["postgresqlDatabase"],
            "port": pg["service"]["port"], "params": pg["postgresqlParams"],
            "scheme": pg["postgresqlScheme"]}}},
        "run_coordinator": {"module": "dagster.core.run_coordinator",
                            "class": "QueuedRunCoordinator", "config": snake_keys(queued)},
        "run_monitoring": snake_keys(values["dagsterDaemon"]["runMonitoring"]),
        # Tag values keep their camelCase key (applyLimitPerUniqueValue), as the chart does.
        "concurrency": {"runs": {**snake_keys(runs), "tag_concurrency_limits": limits},
                        "pools": snake_keys(concurrency["pools"])},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def dockerfile_cmd() -> list[str]:
    match = re.search(r"^CMD (\[.*\])$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "deploy/Dockerfile has no exec-form CMD"
    return json.loads(match.group(1))


def dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    (env_line,) = re.findall(r"^ENV (.*)$", text, re.MULTILINE)
    return dict(item.split("=", 1) for item in env_line.split())


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# ------------------------------------------------------------------ PostgreSQL


@dataclass(frozen=True)
class Postgres:
    """A running local PostgreSQL server (password authentication over TCP)."""

    port: int
    user: str
    password: str
    host: str = "127.0.0.1"

    def url(self, db: str) -> str:
        # psycopg2 named explicitly: SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3.
        return (f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}"
                f"/{db}")

    def connect(self, db: str):
        return psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=db)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl."""
    found = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin")
                    if (p / "initdb").is_file() and (p / "pg_ctl").is_file()),
                   key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))
    if not found:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found under "
                    "/usr/lib/postgresql/*/bin: `make test` installs them (Debian package "
                    "`postgresql`)", pytrace=False)
    return found[-1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """Start a throw-away PostgreSQL server in a temp folder; stop it even if a test fails."""
    bin_dir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="lgsid-pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    server = Postgres(port=free_port(), user="lgsid", password="deploy-test-pw")
    (root / "pwfile").write_text(server.password + "\n")
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        for path in (sockets, root / "pwfile"):
            shutil.chown(path, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]

    def run(*args: str) -> None:
        proc = subprocess.run([*as_owner, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout}{proc.stderr}"

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", server.user, "--pwfile",
        str(root / "pwfile"), "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
        "--no-sync")
    options = (f"-p {server.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off")
    try:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
            "-o", options, "start")
        con = server.connect("postgres")
        con.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with con.cursor() as cur:
            cur.execute("CREATE DATABASE dagster")
            cur.execute("CREATE DATABASE mlflow")
        con.close()
        yield server
    finally:
        subprocess.run([*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ 1. dagster.yaml


@pytest.fixture
def pg_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "5433",
           "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "secret",
           "DAGSTER_PG_DB": "dagster"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_dagster_yaml_validates_and_a_broken_copy_is_rejected(
        tmp_path: Path, pg_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    config, custom_class = dagster_instance_config(str(DEPLOY))
    assert custom_class is None
    assert env_refs(config["storage"]) == set(PG_ENV)
    # The storage section resolves from the environment (ports become ints).
    storage = process_config(pg_config(), config["storage"]["postgres"])
    assert storage.success, storage.errors
    assert storage.value["postgres_db"] == {
        "hostname": "db.internal", "port": 5433, "username": "dagster", "password": "secret",
        "db_name": "dagster", "params": {}, "scheme": "postgresql+psycopg2"}
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    assert process_config(QueuedRunCoordinator.config_type(), coordinator["config"]).success
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    assert config["concurrency"]["pools"] == load_yaml(
        DEPLOY.parent / "dagster_home" / "dagster.yaml")["concurrency"]["pools"]
    assert config["run_monitoring"]["enabled"] is True
    assert config["telemetry"] == {"enabled": False}

    text = (DEPLOY / "dagster.yaml").read_text()
    for good, bad in (("run_monitoring:", "run_monitorng:"), ("db_name:", "dbname:"),
                      ("max_concurrent_runs: 4", "max_concurrent_runs: four")):
        broken = tmp_path / bad.split(":")[0]
        broken.mkdir()
        (broken / "dagster.yaml").write_text(text.replace(good, bad, 1))
        with pytest.raises(DagsterInvalidConfigError):
            dagster_instance_config(str(broken))
    monkeypatch.delenv("DAGSTER_PG_HOST")
    missing = process_config(pg_config(), config["storage"]["postgres"])
    assert not missing.success
    assert "DAGSTER_PG_HOST" in missing.errors[0].message


# ------------------------------------------------------------------ 2. Postgres end to end


def test_ingest_materializes_with_postgres_storage(
        postgres: Postgres, mlflow_server: MlflowServer, lgsid_env: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # ``mlflow_server`` is only started here, so its boot overlaps this run (test 6 uses it).
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    from lgsid_pipeline.cities import CityConfig, CityRegistry
    from lgsid_pipeline.runner import materialize
    from lgsid_pipeline.sources.synthetic import generate_city, tiny_spec
    from lgsid_pipeline.warehouse import Warehouse

    for name, value in zip(PG_ENV, (postgres.host, str(postgres.port), postgres.user,
                                    postgres.password, "dagster"), strict=True):
        monkeypatch.setenv(name, value)
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    shutil.copy(DEPLOY / "dagster.yaml", dagster_home / "dagster.yaml")
    counts = generate_city(tiny_spec(name="Pgtown", seed=5, n_items=120),
                           lgsid_env / "synthetic" / "pgtown")
    CityRegistry(lgsid_env).add(CityConfig(slug="pgtown", source="synthetic",
                                           path=str(lgsid_env / "synthetic" / "pgtown")))

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        # In-process execution (LGSID_EXECUTOR, set by conftest) keeps the test fast; storage
        # is what this test is about.
        (result,) = materialize(["pgtown"], select=INGEST, instance=instance, parallel=1)
        assert (result.success, result.failed_steps, result.failed_checks) == (True, [], [])
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS

    with postgres.connect("dagster") as con, con.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchall() == [("SUCCESS",)]
        cur.execute("SELECT DISTINCT asset_key FROM event_logs WHERE run_id = %s "
                    "AND dagster_event_type = 'ASSET_MATERIALIZATION'", (result.run_id,))
        materialized = {json.loads(key)[0] for (key,) in cur.fetchall()}
        assert materialized == set(INGEST.split(","))
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s "
                    "AND dagster_event_type = 'ASSET_CHECK_EVALUATION'", (result.run_id,))
        assert cur.fetchone()[0] >= 5
        cur.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'city'")
        assert cur.fetchall() == [("pgtown",)]
    con.close()

    warehouse = Warehouse(lgsid_env)
    quarantine = warehouse.read_table("quarantine", "pgtown") if warehouse.has_table(
        "quarantine", "pgtown") else None
    for table, source_rows in (("items", counts["items"]), ("interactions", counts["checkins"])):
        raw = len(warehouse.read_table(f"raw_{table}", "pgtown"))
        clean = len(warehouse.read_table(table, "pgtown"))
        bad = 0 if quarantine is None else int((quarantine["table_name"] == table).sum())
        assert raw == source_rows
        assert clean > 0 and raw == clean + bad, (table, raw, clean, bad)


# ------------------------------------------------------------------ 3. workspace.yaml


def test_workspace_yaml_validates_and_points_at_the_code_server() -> None:
    workspace = load_yaml(DEPLOY / "workspace.yaml")
    result = process_workspace_config(workspace)
    assert result.success, result.errors
    (entry,) = workspace["load_from"]
    server = entry["grpc_server"]
    cmd = dockerfile_cmd()
    deployment = user_deployment(helm_values())
    assert cmd[:3] == ["dagster", "api", "grpc"]
    assert server["port"] == int(flag(cmd, "-p")) == deployment["port"]
    assert f"EXPOSE {server['port']}" in (DEPLOY / "Dockerfile").read_text()
    # The chart names the Service and the location after the deployment.
    assert server["host"] == server["location_name"] == deployment["name"]
    assert flag(deployment["dagsterApiGrpcArgs"], "-m") == flag(cmd, "-m") == (
        "lgsid_pipeline.definitions")
    broken = {"load_from": [{"grpc_server": {"host": "x", "port": "four thousand"}}]}
    assert not process_workspace_config(broken).success
    assert not process_workspace_config({"load_from": [{"grpc_servr": {"port": 4000}}]}).success


# ------------------------------------------------------------------ 4. Helm values


def test_helm_run_launcher_and_executor_configs_validate() -> None:
    values = helm_values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = chart_run_launcher_config(values)
    result = process_config(K8sRunLauncher.config_type(), launcher)
    assert result.success, result.errors
    assert result.value["run_k8s_config"]["job_spec_config"]["ttlSecondsAfterFinished"] > 0
    bad = {**values["runLauncher"]["config"]["k8sRunLauncher"], "loadInclusterConfig": "yes"}
    bad_values = {**values, "runLauncher": {"type": "K8sRunLauncher",
                                            "config": {"k8sRunLauncher": bad}}}
    assert not process_config(K8sRunLauncher.config_type(),
                              chart_run_launcher_config(bad_values)).success

    env = deployment_env(values)
    assert env["LGSID_EXECUTOR"] == "k8s"
    executor_config = yaml.safe_load(env[K8S_CONFIG_ENV])
    result = process_config(k8s_job_executor.config_schema.config_type, executor_config)
    assert result.success, result.errors
    assert result.value["max_concurrent"] >= 1
    limits = result.value["step_k8s_config"]["container_config"]["resources"]
    assert set(limits) == {"requests", "limits"}
    # Per-step overrides name real steps of the code location.
    from lgsid_pipeline.definitions import defs
    steps = {node.name for job in ("city_pipeline", "global_models")
             for node in defs.resolve_job_def(job).graph.node_defs}
    assert set(result.value["per_step_k8s_config"]) <= steps
    assert not process_config(k8s_job_executor.config_schema.config_type,
                              {**executor_config, "max_concurrent": "four"}).success
    with pytest.raises(ValueError, match="max_concurent"):
        k8s_executor_config("max_concurent: 4")


def test_helm_values_agree_with_the_other_deploy_files(tmp_path: Path) -> None:
    values = helm_values()
    deployment = user_deployment(values)
    env = deployment_env(values)
    # The chart's instance config validates and matches deploy/dagster.yaml's settings.
    chart = chart_instance_config(values)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(chart))
    rendered, _ = dagster_instance_config(str(tmp_path))
    ours, _ = dagster_instance_config(str(DEPLOY))
    assert rendered["concurrency"] == ours["concurrency"]
    assert rendered["telemetry"] == ours["telemetry"]
    for key in ("enabled", "start_timeout_seconds", "poll_interval_seconds",
                "max_resume_run_attempts"):
        assert rendered["run_monitoring"][key] == ours["run_monitoring"][key], key
    assert (rendered["run_coordinator"]["config"]["dequeue_interval_seconds"]
            == ours["run_coordinator"]["config"]["dequeue_interval_seconds"])
    assert values["postgresql"]["enabled"] is False
    assert values["dagsterDaemon"]["enabled"] and values["dagsterDaemon"]["runCoordinator"][
        "enabled"]

    # Every variable deploy/dagster.yaml reads is set for the code location: the password by
    # the chart from its Secret, the rest in the deployment's env, equal to `postgresql`.
    read = env_refs(ours)
    assert read == set(PG_ENV)
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert read - {"DAGSTER_PG_PASSWORD"} <= set(env)
    pg = values["postgresql"]
    assert (env["DAGSTER_PG_HOST"], int(env["DAGSTER_PG_PORT"]), env["DAGSTER_PG_USERNAME"],
            env["DAGSTER_PG_DB"]) == (pg["postgresqlHost"], pg["service"]["port"],
                                      pg["postgresqlUsername"], pg["postgresqlDatabase"])

    # Paths: LGSID_HOME on the mounted volume, as in the image; DAGSTER_HOME as the chart's.
    image_env = dockerfile_env()
    mounts = {m["name"]: m["mountPath"] for m in deployment["volumeMounts"]}
    claims = {v["name"] for v in deployment["volumes"] if "persistentVolumeClaim" in v}
    assert env["LGSID_HOME"] == image_env["LGSID_HOME"] in mounts.values()
    assert {n for n, path in mounts.items() if path == env["LGSID_HOME"]} <= claims
    assert image_env["DAGSTER_HOME"] == values["global"]["dagsterHome"]
    assert image_env["HF_HUB_OFFLINE"] == "1"
    assert "USER 10001" in (DEPLOY / "Dockerfile").read_text()
    assert deployment["securityContext"]["runAsUser"] == 10001

    # MLflow: the tracking URI the pipeline reads points at the Service of deploy/mlflow/.
    manifests = list(yaml.safe_load_all((DEPLOY / "mlflow" / "mlflow.yaml").read_text()))
    (service,) = [m for m in manifests if m["kind"] == "Service"]
    (port,) = service["spec"]["ports"]
    assert env["LGSID_MLFLOW_TRACKING_URI"] == (
        f"http://{service['metadata']['name']}:{port['port']}")
    server = (DEPLOY / "mlflow" / "server.sh").read_text()
    for option in ("--backend-store-uri", "--artifacts-destination", "--serve-artifacts"):
        assert option in server


# ------------------------------------------------------------------ 5. executor selection


def test_executor_selection_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import lgsid_pipeline.definitions as definitions

    helm_config = deployment_env(helm_values())[K8S_CONFIG_ENV]
    assert pipeline_executor({}) is None  # Dagster's default stays
    assert pipeline_executor({EXECUTOR_ENV: "multiprocess"}) is None
    with pytest.raises(ValueError, match="allowed values: multiprocess, in_process, k8s"):
        pipeline_executor({EXECUTOR_ENV: "kubernetes"})
    with pytest.raises(ValueError, match=K8S_CONFIG_ENV):
        pipeline_executor({EXECUTOR_ENV: "k8s", K8S_CONFIG_ENV: "- not\n- a mapping"})
    try:
        monkeypatch.setenv(EXECUTOR_ENV, "k8s")
        monkeypatch.setenv(K8S_CONFIG_ENV, helm_config)
        reloaded = importlib.reload(definitions)
        for job in ("city_pipeline", "global_models", "nightly_retokenization"):
            executor = reloaded.defs.resolve_job_def(job).executor_def
            assert executor.name == "k8s", job
            applied = executor.config_schema.resolve_config({}).value["config"]
            assert applied["max_concurrent"] == yaml.safe_load(helm_config)["max_concurrent"]
        monkeypatch.setenv(EXECUTOR_ENV, "celery")
        with pytest.raises(ValueError, match="LGSID_EXECUTOR='celery'"):
            importlib.reload(definitions)
    finally:
        monkeypatch.undo()  # the session's own LGSID_EXECUTOR (tests/conftest.py) comes back
        default = importlib.reload(definitions)
    assert default.defs.resolve_job_def("city_pipeline").executor_def.name != "k8s"


# ------------------------------------------------------------------ 6. MLflow server


@dataclass
class MlflowServer:
    """An ``mlflow server`` on the local PostgreSQL, artifacts proxied to a local folder."""

    proc: subprocess.Popen
    uri: str
    artifacts: Path
    log: Path

    def wait_healthy(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "MLflow server did not become healthy"
            time.sleep(0.25)


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres) -> Iterator[MlflowServer]:
    """Start the server in the background; it boots while the ingest test runs."""
    root = Path(tempfile.mkdtemp(prefix="lgsid-mlflow-"))
    port = free_port()
    log = root / "mlflow.log"
    mlflow = Path(sys.executable).with_name("mlflow")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri", postgres.url("mlflow"),
             "--artifacts-destination", (root / "artifacts").as_uri(), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield MlflowServer(proc, f"http://127.0.0.1:{port}", root / "artifacts", log)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def test_mlflow_server_with_postgres_backend_registers_and_loads(
        postgres: Postgres, mlflow_server: MlflowServer, lgsid_env: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lgsid_pipeline import registry

    mlflow_server.wait_healthy()
    monkeypatch.setenv("LGSID_MLFLOW_TRACKING_URI", mlflow_server.uri)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.json").write_text('{"w": [1, 2, 3]}')
    model = registry.register_folder("deploy-smoke", folder, params={"k": 3},
                                     metrics={"auc": 0.75}, home=lgsid_env)
    loaded = registry.champion_folder("deploy-smoke", home=lgsid_env)
    assert (loaded / "weights.json").read_text() == '{"w": [1, 2, 3]}'
    with postgres.connect("mlflow") as con, con.cursor() as cur:
        cur.execute("SELECT name FROM registered_models")
        assert cur.fetchall() == [("deploy-smoke",)]
        cur.execute("SELECT key, value FROM metrics WHERE run_uuid = %s", (model.run_id,))
        assert cur.fetchall() == [("auc", 0.75)]
    con.close()
    # Artifacts went through the server to its destination, not to a local store.
    assert list(mlflow_server.artifacts.rglob("weights.json"))
    assert not (lgsid_env / "mlflow").exists()


def test_the_built_package_carries_the_sql(tmp_path: Path) -> None:
    """A non-editable install (the Docker image) finds sql/ under <prefix>/share."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("lgsid_pipeline-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = {f"lgsid_pipeline-0.1.0.data/data/share/lgsid_pipeline/sql/{p.name}"
                for p in (REPO / "sql").glob("*.sql")}
    assert expected and expected <= names
