"""MLflow: log trained artifacts, register them as models with the alias ``champion``, load them.

Tracking URI: ``LGSID_MLFLOW_TRACKING_URI`` if set (a tracking server in production), else a
SQLite store under ``<LGSID_HOME>/mlflow`` with artifacts beside it. Each model is a pyfunc
wrapping one folder of artifacts written by the library (LoRA adapter, reward head,
tokenizer), so a registered version loads with
``mlflow.pyfunc.load_model('models:/<name>@champion')`` and its folder is what the pipeline
reloads.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
from mlflow.tracking import MlflowClient

from lgsid_pipeline.config import lgsid_home

CHAMPION = "champion"
EXPERIMENT = "lgsid"
UI_URL = os.environ.get("LGSID_MLFLOW_UI_URL", "http://127.0.0.1:5000")


class ModelArtifactError(FileNotFoundError):
    """A registered model, or its artifacts, missing or unreadable."""


@dataclass(frozen=True)
class RegisteredModel:
    """Where a registered model version lives."""

    name: str
    version: str
    run_id: str
    model_uri: str
    run_url: str


class FolderModel(mlflow.pyfunc.PythonModel):
    """A pyfunc over one artifact folder; ``predict`` reports what the folder holds."""

    def load_context(self, context: Any) -> None:
        self.folder = Path(context.artifacts["folder"])

    def predict(self, context: Any, model_input: list[str],
                params: dict | None = None) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir())


def metric_name(key: str) -> str:
    """An MLflow-safe metric name (``hit@10`` -> ``hit_at_10``)."""
    return key.replace("@", "_at_")


def tracking_uri(home: Path | None = None) -> str:
    """Configure and return the MLflow tracking URI."""
    store = (home or lgsid_home()) / "mlflow"
    uri = os.environ.get("LGSID_MLFLOW_TRACKING_URI") or _local_uri(store)
    if uri == _local_uri(store):
        store.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _experiment_id(uri: str, home: Path | None) -> str:
    client = MlflowClient()
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    store = (home or lgsid_home()) / "mlflow"
    # A local store keeps its artifacts beside its database, not in the working directory.
    artifacts = (store / "artifacts").as_uri() if uri == _local_uri(store) else None
    return client.create_experiment(EXPERIMENT, artifact_location=artifacts)


def _local_uri(store: Path) -> str:
    return f"sqlite:///{store / 'mlflow.db'}"


def register_folder(
    name: str,
    folder: Path,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str] | None = None,
    images: dict[str, bytes] | None = None,
    home: Path | None = None,
) -> RegisteredModel:
    """Log ``folder`` as a pyfunc model in a new run, register it, alias it ``champion``."""
    uri = tracking_uri(home)
    experiment_id = _experiment_id(uri, home)
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags or {}) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        finite = {metric_name(k): float(v) for k, v in metrics.items() if v == v}  # drop NaN
        if finite:
            mlflow.log_metrics(finite)
        with tempfile.TemporaryDirectory() as scratch:
            for file_name, png in (images or {}).items():
                path = Path(scratch) / file_name
                path.write_bytes(png)
                mlflow.log_artifact(str(path), artifact_path="plots")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=FolderModel(), artifacts={"folder": str(folder)},
            pip_requirements=["lgsid_pipeline"], registered_model_name=name,
            await_registration_for=0,
        )
        run_id = run.info.run_id
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not versions:
        raise ModelArtifactError(f"MLflow did not register model {name!r} for run {run_id}")
    version = str(max(int(v.version) for v in versions))
    client.set_registered_model_alias(name, CHAMPION, version)
    return RegisteredModel(name=name, version=version, run_id=run_id,
                           model_uri=info.model_uri,
                           run_url=f"{UI_URL}/#/experiments/{experiment_id}/runs/{run_id}")


def champion_folder(name: str, home: Path | None = None, alias: str = CHAMPION) -> Path:
    """Local folder of the artifacts of ``models:/<name>@<alias>`` (downloaded if remote)."""
    tracking_uri(home)
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as exc:
        raise ModelArtifactError(
            f"no registered model {name!r} with alias {alias!r}; materialize it first") from exc
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version.version}")
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a bad store
        raise ModelArtifactError(
            f"artifacts of model {name!r} version {version.version} are unreadable: {exc}"
        ) from exc
    folder = Path(local) / "artifacts" / "folder"
    candidates = [p for p in (Path(local) / "artifacts").glob("*") if p.is_dir()]
    if not folder.is_dir() and candidates:
        folder = candidates[0]
    if not folder.is_dir():
        raise ModelArtifactError(f"model {name!r} version {version.version} has no artifact "
                                 f"folder under {local}")
    return folder


def log_run_metrics(name: str, metrics: dict[str, float], home: Path | None = None,
                    alias: str = CHAMPION) -> str:
    """Add metrics to the MLflow run that produced ``models:/<name>@<alias>``; return its id."""
    tracking_uri(home)
    client = MlflowClient()
    try:
        run_id = client.get_model_version_by_alias(name, alias).run_id
    except mlflow.exceptions.MlflowException as exc:
        raise ModelArtifactError(f"no registered model {name!r} with alias {alias!r}") from exc
    for key, value in metrics.items():
        if value == value:  # skip NaN
            client.log_metric(run_id, metric_name(key), float(value))
    return run_id
