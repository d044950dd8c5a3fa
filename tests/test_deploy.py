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
from dagster._serdes import ConfigurableClassData
from dagster._utils import convert_dagster_submodule_name
from dagster_k8s import K8sRunLauncher, k8s_job_executor

from lgsid_pipeline.defs.executor import (
    EXECUTOR_ENV,
    K8S_CONFIG_ENV,
    k8s_executor_config,
    pipeline_executor,
)

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PG_ENV = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)
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


# The official chart renders the instance's dagster.yaml from templates/configmap-instance.yaml
# and templates/helpers/instance/*.tpl (chart dagster/dagster 1.13.27). `helm template` cannot
# run in these tests: the chart is published only in Dagster's own Helm chart repository, which
# is not one of the package registries this project installs from. The functions below reproduce
# those templates for the sections that deploy/dagster.yaml also sets, over the chart's defaults
# (CHART_DEFAULTS, from the chart's values.yaml) merged with deploy/helm/values.yaml as Helm merges
# values (maps recursively, everything else replaced, a null deleting the key).

CHART_DEFAULTS: dict[str, Any] = {
    "dagsterDaemon": {
        "enabled": True,
        "runCoordinator": {
            "enabled": True,
            "type": "QueuedRunCoordinator",
            "config": {
                "queuedRunCoordinator": {
                    "maxConcurrentRuns": None,
                    "tagConcurrencyLimits": [],
                    "dequeueIntervalSeconds": None,
                    "dequeueUseThreads": True,
                    "dequeueNumWorkers": 4,
                }
            },
        },
        "runMonitoring": {
            "enabled": True,
            "startTimeoutSeconds": 300,
            "pollIntervalSeconds": 120,
            "maxResumeRunAttempts": 0,
            "freeSlotsAfterRunEndSeconds": 0,
        },
        "runRetries": {"enabled": True, "maxRetries": 0},
        "sensors": {"useThreads": True, "numWorkers": 4},
        "schedules": {"useThreads": True, "numWorkers": 4},
    },
    "concurrency": {
        "enabled": False,
        "pools": {"defaultLimit": None, "granularity": None, "opGranularityRunBuffer": None},
        "runs": {"maxConcurrentRuns": None, "tagConcurrencyLimits": []},
    },
    "telemetry": {"enabled": True},
}
# The instance sections compared whole; deploy/dagster.yaml may set no other but `storage`.
CHART_SECTIONS = (
    "run_coordinator",
    "run_monitoring",
    "run_retries",
    "sensors",
    "schedules",
    "backfills",
    "concurrency",
    "telemetry",
)
# The `runMonitoring` keys the chart renders (it ignores any other key silently).
RUN_MONITORING_KEYS = {
    "enabled",
    "startTimeoutSeconds",
    "cancelTimeoutSeconds",
    "maxRuntimeSeconds",
    "maxResumeRunAttempts",
    "pollIntervalSeconds",
    "freeSlotsAfterRunEndSeconds",
}


def helm_merge(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of user values over a chart's defaults."""
    merged = dict(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _truthy(value: Any) -> bool:
    """Go template truth: nil, false, 0, "" and empty lists and maps are false."""
    return value is not None and value is not False and value != 0 and value not in ("", [], {})


def _thread_pool(config: Mapping[str, Any]) -> dict[str, Any]:
    section = {"use_threads": config.get("useThreads")}
    for key in ("numWorkers", "numSubmitWorkers"):
        if _truthy(config.get(key)):
            section[snake(key)] = config[key]
    return section


def _queued_run_coordinator(values: Mapping[str, Any]) -> dict[str, Any]:
    """dagsterYaml.runCoordinator.queued, with the conflict checks of dagsterYaml.concurrency."""
    queued = values["dagsterDaemon"]["runCoordinator"]["config"].get("queuedRunCoordinator") or {}
    concurrency = values["concurrency"]
    runs = concurrency.get("runs") or {}
    pools = concurrency.get("pools") or {}
    if concurrency.get("enabled"):
        if (
            runs.get("maxConcurrentRuns") is not None
            and queued.get("maxConcurrentRuns") is not None
        ):
            raise ValueError(
                "Cannot set both concurrency.runs.maxConcurrentRuns and "
                "queuedRunCoordinator.maxConcurrentRuns"
            )
        if runs.get("tagConcurrencyLimits") and queued.get("tagConcurrencyLimits"):
            raise ValueError(
                "Cannot set both concurrency.runs.tagConcurrencyLimits and "
                "queuedRunCoordinator.tagConcurrencyLimits"
            )
        block = queued.get("blockOpConcurrencyLimitedRuns") or {}
        if (
            pools.get("opGranularityRunBuffer") is not None
            and block.get("opConcurrencySlotBuffer") is not None
        ):
            raise ValueError(
                "Cannot set both concurrency.pools.opGranularityRunBuffer and "
                "queuedRunCoordinator.blockOpConcurrencyLimitedRuns"
            )
    section: dict[str, Any] = {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
    }
    if not any(_truthy(v) for v in queued.values()):
        return section
    config: dict[str, Any] = {}
    if not concurrency.get("enabled") or queued.get("maxConcurrentRuns") is not None:
        max_runs = queued.get("maxConcurrentRuns")
        config["max_concurrent_runs"] = -1 if max_runs is None else max_runs
    if _truthy(queued.get("tagConcurrencyLimits")):
        config["tag_concurrency_limits"] = queued["tagConcurrencyLimits"]
    for key in ("dequeueIntervalSeconds", "dequeueUseThreads", "dequeueNumWorkers"):
        if _truthy(queued.get(key)):
            config[snake(key)] = queued[key]
    if _truthy(queued.get("blockOpConcurrencyLimitedRuns")):
        block = queued["blockOpConcurrencyLimitedRuns"]
        config["block_op_concurrency_limited_runs"] = {
            "enabled": block.get("enabled"),
            "op_concurrency_slot_buffer": block.get("opConcurrencySlotBuffer"),
        }
    return {**section, "config": config}


def _concurrency(concurrency: Mapping[str, Any]) -> dict[str, Any] | None:
    """dagsterYaml.concurrency (tag limit values keep their keys: the chart writes toYaml)."""
    pools = concurrency.get("pools") or {}
    runs = concurrency.get("runs") or {}
    section: dict[str, Any] = {}
    if (
        pools.get("defaultLimit") is not None
        or _truthy(pools.get("granularity"))
        or pools.get("opGranularityRunBuffer") is not None
    ):
        section["pools"] = {}
        if pools.get("defaultLimit") is not None:
            section["pools"]["default_limit"] = pools["defaultLimit"]
        if _truthy(pools.get("granularity")):
            section["pools"]["granularity"] = pools["granularity"]
        if pools.get("opGranularityRunBuffer") is not None:
            section["pools"]["op_granularity_run_buffer"] = pools["opGranularityRunBuffer"]
    limits = runs.get("tagConcurrencyLimits") or []
    if runs.get("maxConcurrentRuns") is not None or limits:
        section["runs"] = {}
        if runs.get("maxConcurrentRuns") is not None:
            section["runs"]["max_concurrent_runs"] = runs["maxConcurrentRuns"]
        if limits:
            section["runs"]["tag_concurrency_limits"] = [
                {
                    "key": str(limit["key"]),
                    **({"value": limit["value"]} if _truthy(limit.get("value")) else {}),
                    "limit": limit["limit"],
                }
                for limit in limits
            ]
    return section or None


def chart_rendered_sections(values: Mapping[str, Any]) -> dict[str, Any]:
    """The CHART_SECTIONS of the instance dagster.yaml the chart renders from ``values``."""
    merged = helm_merge(CHART_DEFAULTS, values)
    daemon = merged["dagsterDaemon"]
    rendered: dict[str, Any] = {}
    coordinator = daemon["runCoordinator"]
    if daemon["enabled"] and coordinator["enabled"]:
        if coordinator["type"] == "QueuedRunCoordinator":
            rendered["run_coordinator"] = _queued_run_coordinator(merged)
        elif coordinator["type"] == "CustomRunCoordinator":
            custom = coordinator["config"]["customRunCoordinator"]
            rendered["run_coordinator"] = {
                "module": custom["module"],
                "class": custom["class"],
                "config": custom.get("config"),
            }
    monitoring = daemon["runMonitoring"]
    if daemon["enabled"] and monitoring.get("enabled"):
        section = {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring.get("startTimeoutSeconds"),
        }
        for key in ("cancelTimeoutSeconds", "maxRuntimeSeconds", "maxResumeRunAttempts"):
            if monitoring.get(key) is not None:
                section[snake(key)] = monitoring[key]
        section["poll_interval_seconds"] = monitoring.get("pollIntervalSeconds")
        section["free_slots_after_run_end_seconds"] = monitoring.get("freeSlotsAfterRunEndSeconds")
        rendered["run_monitoring"] = section
    retries = daemon["runRetries"]
    if daemon["enabled"] and retries.get("enabled"):
        rendered["run_retries"] = {"enabled": retries["enabled"]}
        if _truthy(retries.get("maxRetries")):
            rendered["run_retries"]["max_retries"] = retries["maxRetries"]
        if "retryOnAssetOrOpFailure" in retries:
            rendered["run_retries"]["retry_on_asset_or_op_failure"] = retries[
                "retryOnAssetOrOpFailure"
            ]
    for name in ("sensors", "schedules"):
        if daemon["enabled"] and _truthy(daemon[name].get("useThreads")):
            rendered[name] = _thread_pool(daemon[name])
    if daemon["enabled"] and _truthy(daemon.get("backfills")):
        rendered["backfills"] = _thread_pool(daemon["backfills"])
    rendered["telemetry"] = {"enabled": merged["telemetry"]["enabled"]}
    if merged["concurrency"].get("enabled"):
        rendered["concurrency"] = _concurrency(merged["concurrency"])
    # additionalInstanceConfig is appended verbatim (it may set any section).
    rendered.update(merged.get("additionalInstanceConfig") or {})
    return rendered


def normalized_section(name: str, section: Any) -> Any:
    """A section as Dagster reads it: `dagster.core.*` modules load as `dagster._core.*`."""
    if name == "run_coordinator" and isinstance(section, Mapping) and "module" in section:
        return {**section, "module": convert_dagster_submodule_name(section["module"], "private")}
    return section


_MISSING = object()


def section_diffs(helm: Any, ours: Any, path: str) -> list[str]:
    """Every key path where the chart's rendering and deploy/dagster.yaml differ."""
    if isinstance(helm, Mapping) and isinstance(ours, Mapping):
        return [
            diff
            for key in sorted(set(helm) | set(ours), key=str)
            for diff in section_diffs(
                helm.get(key, _MISSING), ours.get(key, _MISSING), f"{path}.{key}"
            )
        ]
    if isinstance(helm, list) and isinstance(ours, list) and len(helm) == len(ours):
        return [
            diff
            for i, (h, o) in enumerate(zip(helm, ours, strict=True))
            for diff in section_diffs(h, o, f"{path}[{i}]")
        ]
    if helm == ours:
        return []
    return [
        f"{path}: helm={'(absent)' if helm is _MISSING else repr(helm)} "
        f"dagster.yaml={'(absent)' if ours is _MISSING else repr(ours)}"
    ]


def instance_disagreements(values: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    """Sections of CHART_SECTIONS where the chart's instance and deploy/dagster.yaml differ."""
    rendered = chart_rendered_sections(values)
    return [
        diff
        for name in CHART_SECTIONS
        for diff in section_diffs(
            normalized_section(name, rendered.get(name, _MISSING)),
            normalized_section(name, ours.get(name, _MISSING)),
            name,
        )
    ]


def chart_instance_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """The chart's instance dagster.yaml: its storage and every section of CHART_SECTIONS."""
    pg = values["postgresql"]
    return {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "hostname": pg["postgresqlHost"],
                    "username": pg["postgresqlUsername"],
                    "password": {"env": "DAGSTER_PG_PASSWORD"},
                    "db_name": pg["postgresqlDatabase"],
                    "port": pg["service"]["port"],
                    "params": pg["postgresqlParams"],
                    "scheme": pg["postgresqlScheme"],
                }
            }
        },
        **chart_rendered_sections(values),
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
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{db}"

    def connect(self, db: str):
        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=db
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl."""
    found = sorted(
        (
            p
            for p in Path("/usr/lib/postgresql").glob("*/bin")
            if (p / "initdb").is_file() and (p / "pg_ctl").is_file()
        ),
        key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0),
    )
    if not found:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under "
            "/usr/lib/postgresql/*/bin: `make test` installs them (Debian package "
            "`postgresql`)",
            pytrace=False,
        )
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

    run(
        str(bin_dir / "initdb"),
        "-D",
        str(data),
        "-U",
        server.user,
        "--pwfile",
        str(root / "pwfile"),
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "-E",
        "UTF8",
        "--no-sync",
    )
    options = (
        f"-p {server.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off"
    )
    try:
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        con = server.connect("postgres")
        con.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with con.cursor() as cur:
            cur.execute("CREATE DATABASE dagster")
            cur.execute("CREATE DATABASE mlflow")
        con.close()
        yield server
    finally:
        subprocess.run(
            [*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ 1. dagster.yaml


@pytest.fixture
def pg_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "DAGSTER_PG_HOST": "db.internal",
        "DAGSTER_PG_PORT": "5433",
        "DAGSTER_PG_USERNAME": "dagster",
        "DAGSTER_PG_PASSWORD": "secret",
        "DAGSTER_PG_DB": "dagster",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_dagster_yaml_validates_and_a_broken_copy_is_rejected(
    tmp_path: Path, pg_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, custom_class = dagster_instance_config(str(DEPLOY))
    assert custom_class is None
    assert env_refs(config["storage"]) == set(PG_ENV)
    # The storage section resolves from the environment (ports become ints).
    storage = process_config(pg_config(), config["storage"]["postgres"])
    assert storage.success, storage.errors
    assert storage.value["postgres_db"] == {
        "hostname": "db.internal",
        "port": 5433,
        "username": "dagster",
        "password": "secret",
        "db_name": "dagster",
        "params": {},
        "scheme": "postgresql+psycopg2",
    }
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    assert process_config(QueuedRunCoordinator.config_type(), coordinator["config"]).success
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    assert (
        config["concurrency"]["pools"]
        == load_yaml(DEPLOY.parent / "dagster_home" / "dagster.yaml")["concurrency"]["pools"]
    )
    assert config["run_monitoring"]["enabled"] is True
    assert config["telemetry"] == {"enabled": False}

    text = (DEPLOY / "dagster.yaml").read_text()
    for good, bad in (
        ("run_monitoring:", "run_monitorng:"),
        ("db_name:", "dbname:"),
        ("max_concurrent_runs: 4", "max_concurrent_runs: four"),
    ):
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


@pytest.mark.slow
@pytest.mark.postgres
def test_ingest_materializes_with_postgres_storage(
    postgres: Postgres,
    mlflow_server: MlflowServer,
    lgsid_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ``mlflow_server`` is only started here, so its boot overlaps this run (test 6 uses it).
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage
    from helpers import tiny_spec

    from lgsid_pipeline.cities import CityConfig, CityRegistry
    from lgsid_pipeline.demo import generate_city
    from lgsid_pipeline.runner import materialize
    from lgsid_pipeline.warehouse import Warehouse

    for name, value in zip(
        PG_ENV,
        (postgres.host, str(postgres.port), postgres.user, postgres.password, "dagster"),
        strict=True,
    ):
        monkeypatch.setenv(name, value)
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    shutil.copy(DEPLOY / "dagster.yaml", dagster_home / "dagster.yaml")
    counts = generate_city(
        tiny_spec(name="Pgtown", seed=5, n_items=120), lgsid_env / "synthetic" / "pgtown"
    )
    CityRegistry(lgsid_env).add(
        CityConfig(slug="pgtown", source="synthetic", path=str(lgsid_env / "synthetic" / "pgtown"))
    )

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
        cur.execute(
            "SELECT DISTINCT asset_key FROM event_logs WHERE run_id = %s "
            "AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (result.run_id,),
        )
        materialized = {json.loads(key)[0] for (key,) in cur.fetchall()}
        assert materialized == set(INGEST.split(","))
        cur.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s "
            "AND dagster_event_type = 'ASSET_CHECK_EVALUATION'",
            (result.run_id,),
        )
        assert cur.fetchone()[0] >= 5
        cur.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'city'")
        assert cur.fetchall() == [("pgtown",)]
    con.close()

    warehouse = Warehouse(lgsid_env)
    quarantine = (
        warehouse.read_table("quarantine", "pgtown")
        if warehouse.has_table("quarantine", "pgtown")
        else None
    )
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
    assert (
        flag(deployment["dagsterApiGrpcArgs"], "-m")
        == flag(cmd, "-m")
        == ("lgsid_pipeline.definitions")
    )
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
    bad_values = {
        **values,
        "runLauncher": {"type": "K8sRunLauncher", "config": {"k8sRunLauncher": bad}},
    }
    assert not process_config(
        K8sRunLauncher.config_type(), chart_run_launcher_config(bad_values)
    ).success

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

    steps = {
        node.name
        for job in ("city_pipeline", "global_models")
        for node in defs.resolve_job_def(job).graph.node_defs
    }
    assert set(result.value["per_step_k8s_config"]) <= steps
    assert not process_config(
        k8s_job_executor.config_schema.config_type, {**executor_config, "max_concurrent": "four"}
    ).success
    with pytest.raises(ValueError, match="max_concurent"):
        k8s_executor_config("max_concurent: 4")


def test_helm_values_agree_with_the_other_deploy_files(tmp_path: Path) -> None:
    values = helm_values()
    deployment = user_deployment(values)
    env = deployment_env(values)
    # The chart's instance config validates with Dagster's schema (its sections are compared
    # with deploy/dagster.yaml's, whole, in the next test).
    chart = chart_instance_config(values)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(chart))
    dagster_instance_config(str(tmp_path))
    ours, _ = dagster_instance_config(str(DEPLOY))
    assert values["postgresql"]["enabled"] is False
    assert (
        values["dagsterDaemon"]["enabled"] and values["dagsterDaemon"]["runCoordinator"]["enabled"]
    )

    # Every variable deploy/dagster.yaml reads is set for the code location: the password by
    # the chart from its Secret, the rest in the deployment's env, equal to `postgresql`.
    read = env_refs(ours)
    assert read == set(PG_ENV)
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert read - {"DAGSTER_PG_PASSWORD"} <= set(env)
    pg = values["postgresql"]
    assert (
        env["DAGSTER_PG_HOST"],
        int(env["DAGSTER_PG_PORT"]),
        env["DAGSTER_PG_USERNAME"],
        env["DAGSTER_PG_DB"],
    ) == (
        pg["postgresqlHost"],
        pg["service"]["port"],
        pg["postgresqlUsername"],
        pg["postgresqlDatabase"],
    )

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
        f"http://{service['metadata']['name']}:{port['port']}"
    )
    server = (DEPLOY / "mlflow" / "server.sh").read_text()
    for option in ("--backend-store-uri", "--artifacts-destination", "--serve-artifacts"):
        assert option in server


def test_helm_instance_sections_equal_dagster_yaml_whole() -> None:
    """The run coordinator, run monitoring, run retries, sensor/schedule/backfill threads,
    concurrency (runs and pools) and telemetry sections that the chart renders from
    deploy/helm/values.yaml each equal deploy/dagster.yaml's, key for key.

    `helm template` is not run: the dagster/dagster chart is not in any package registry this
    project installs from, so ``chart_rendered_sections`` reproduces its templates (see above).
    """
    values = helm_values()
    ours = load_yaml(DEPLOY / "dagster.yaml")
    assert instance_disagreements(values, ours) == []
    # deploy/dagster.yaml sets no section that this comparison (or the storage test) leaves out.
    assert set(ours) <= {"storage", *CHART_SECTIONS}
    # Nothing in the daemon's values is silently dropped by the chart.
    daemon = values["dagsterDaemon"]
    assert set(daemon["runMonitoring"]) <= RUN_MONITORING_KEYS
    assert daemon["runCoordinator"]["type"] == "CustomRunCoordinator"
    assert set(daemon["runCoordinator"]["config"]["customRunCoordinator"]) == {
        "module",
        "class",
        "config",
    }
    # The rendered coordinator is Dagster's own queue, with a config its schema accepts.
    coordinator = ConfigurableClassData(
        ours["run_coordinator"]["module"],
        ours["run_coordinator"]["class"],
        yaml.safe_dump(ours["run_coordinator"]["config"]),
    )
    assert isinstance(coordinator.rehydrate(), QueuedRunCoordinator)
    assert values["concurrency"]["enabled"] is True


@pytest.mark.parametrize(
    ("side", "mutate", "expected"),
    [
        (
            "helm",
            lambda v: v["dagsterDaemon"]["runMonitoring"].update(freeSlotsAfterRunEndSeconds=0),
            "run_monitoring.free_slots_after_run_end_seconds: helm=0 dagster.yaml=300",
        ),
        (
            "helm",
            lambda v: v["dagsterDaemon"].update(runRetries={"enabled": True, "maxRetries": 2}),
            "run_retries: helm={'enabled': True, 'max_retries': 2} dagster.yaml=(absent)",
        ),
        (
            "helm",
            lambda v: v["concurrency"]["pools"].update(granularity="op"),
            "concurrency.pools.granularity: helm='op' dagster.yaml=(absent)",
        ),
        (
            "helm",
            lambda v: v["dagsterDaemon"]["sensors"].update(useThreads=True),
            "sensors: helm={'use_threads': True, 'num_workers': 4} dagster.yaml=(absent)",
        ),
        (
            "dagster.yaml",
            lambda d: d["run_coordinator"]["config"].pop("user_code_failure_retry_delay"),
            "run_coordinator.config.user_code_failure_retry_delay: helm=30 dagster.yaml=(absent)",
        ),
        (
            "dagster.yaml",
            lambda d: d["concurrency"]["runs"]["tag_concurrency_limits"][0].update(limit=2),
            "concurrency.runs.tag_concurrency_limits[0].limit: helm=1 dagster.yaml=2",
        ),
        (
            "dagster.yaml",
            lambda d: d["run_monitoring"].update(max_runtime_seconds=7200),
            "run_monitoring.max_runtime_seconds: helm=(absent) dagster.yaml=7200",
        ),
    ],
    ids=[
        "helm-free-slots",
        "helm-run-retries",
        "helm-pool-granularity",
        "helm-sensor-threads",
        "yaml-retry-delay",
        "yaml-tag-limit",
        "yaml-max-runtime",
    ],
)
def test_instance_comparison_reports_one_changed_key(side: str, mutate, expected: str) -> None:
    values, ours = helm_values(), load_yaml(DEPLOY / "dagster.yaml")
    mutate(values if side == "helm" else ours)
    assert instance_disagreements(values, ours) == [expected]


def test_chart_rendering_follows_the_chart_templates() -> None:
    """The reproduction of the chart's templates on the chart's own queued coordinator."""
    values = helm_values()
    values["dagsterDaemon"]["runCoordinator"] = {
        "enabled": True,
        "type": "QueuedRunCoordinator",
        "config": {"queuedRunCoordinator": {"dequeueIntervalSeconds": 5}},
    }
    rendered = chart_rendered_sections(values)
    # The chart's defaults come in: its thread pool, and no user-code failure retries.
    assert rendered["run_coordinator"] == {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {
            "dequeue_interval_seconds": 5,
            "dequeue_use_threads": True,
            "dequeue_num_workers": 4,
        },
    }
    assert instance_disagreements(values, load_yaml(DEPLOY / "dagster.yaml")) == [
        "run_coordinator.config.dequeue_num_workers: helm=4 dagster.yaml=(absent)",
        "run_coordinator.config.dequeue_use_threads: helm=True dagster.yaml=(absent)",
        "run_coordinator.config.max_user_code_failure_retries: helm=(absent) dagster.yaml=3",
        "run_coordinator.config.user_code_failure_retry_delay: helm=(absent) dagster.yaml=30",
    ]
    # The chart refuses run limits in both the coordinator and `concurrency`.
    values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"][
        "maxConcurrentRuns"
    ] = 4
    with pytest.raises(ValueError, match="maxConcurrentRuns"):
        chart_rendered_sections(values)
    # Chart defaults alone: run retries on, monitoring's own timings, telemetry on, no limits.
    defaults = chart_rendered_sections({})
    assert defaults["run_retries"] == {"enabled": True}
    assert defaults["run_monitoring"] == {
        "enabled": True,
        "start_timeout_seconds": 300,
        "max_resume_run_attempts": 0,
        "poll_interval_seconds": 120,
        "free_slots_after_run_end_seconds": 0,
    }
    assert defaults["telemetry"] == {"enabled": True}
    assert "concurrency" not in defaults
    assert defaults["run_coordinator"]["config"]["max_concurrent_runs"] == -1
    # A null in the values deletes the chart's default.
    assert "poll_interval_seconds" in chart_rendered_sections({})["run_monitoring"]
    nulled = chart_rendered_sections(
        {"dagsterDaemon": {"runMonitoring": {"maxResumeRunAttempts": None}}}
    )
    assert "max_resume_run_attempts" not in nulled["run_monitoring"]


# ------------------------------------------------------------------ 5. executor selection


def test_executor_selection_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import lgsid_pipeline.definitions as definitions
    import lgsid_pipeline.defs.automation as automation

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
        importlib.reload(automation)  # the nightly job picks its executor at import too
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
        importlib.reload(automation)
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
            [
                str(mlflow),
                "server",
                "--backend-store-uri",
                postgres.url("mlflow"),
                "--artifacts-destination",
                (root / "artifacts").as_uri(),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield MlflowServer(proc, f"http://127.0.0.1:{port}", root / "artifacts", log)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_mlflow_server_with_postgres_backend_registers_and_loads(
    postgres: Postgres,
    mlflow_server: MlflowServer,
    lgsid_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lgsid_pipeline import registry

    shutil.rmtree(lgsid_env / "mlflow")  # the fixture's seeded local store: none must appear

    mlflow_server.wait_healthy()
    monkeypatch.setenv("LGSID_MLFLOW_TRACKING_URI", mlflow_server.uri)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.json").write_text('{"w": [1, 2, 3]}')
    model = registry.register_folder(
        "deploy-smoke",
        folder,
        params={"k": 3},
        metrics={"auc": 0.75},
        dagster_run_id=None,
        home=lgsid_env,
    )
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
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("lgsid_pipeline-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = {
        f"lgsid_pipeline-0.1.0.data/data/share/lgsid_pipeline/sql/{p.name}"
        for p in (REPO / "sql").glob("*.sql")
    }
    assert expected and expected <= names
