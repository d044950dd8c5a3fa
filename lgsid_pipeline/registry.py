"""MLflow: log trained artifacts, register them as models with the alias ``champion``, load them.

Tracking URI: ``LGSID_MLFLOW_TRACKING_URI`` if set (a tracking server in production), else a
SQLite store under ``<LGSID_HOME>/mlflow`` with artifacts beside it. Each model is a pyfunc
wrapping one folder of artifacts written by the library (LoRA adapter, reward head,
tokenizer), so a registered version loads with
``mlflow.pyfunc.load_model('models:/<name>@champion')`` and its folder is what the pipeline
reloads. Each registration records the SHA-256 of every file of the folder; ``champion_folder``
checks them, so a missing or damaged artifact file is reported with the model and file names.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgsid_pipeline.atomic import file_sha256
from lgsid_pipeline.catalog import parse_model_name
from lgsid_pipeline.config import lgsid_home
from lgsid_pipeline.provenance import git_sha

CHAMPION = "champion"
GIT_SHA_TAG = "git_sha"  # MLflow run tags of every registered model
DAGSTER_RUN_TAG = "dagster_run_id"
EXPERIMENT = "lgsid"
UI_URL = os.environ.get("LGSID_MLFLOW_UI_URL", "http://127.0.0.1:5000")
CHECKSUMS = "lgsid_checksums.json"


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


def _folder_model_class() -> type:
    """The pyfunc class of registered folders, built once: it subclasses an MLflow class, so
    building it on first use keeps MLflow out of the import of this module (and of the
    Dagster code location)."""
    if "FolderModel" in globals():
        return globals()["FolderModel"]
    import mlflow.pyfunc

    class FolderModel(mlflow.pyfunc.PythonModel):
        """A pyfunc over one artifact folder; ``predict`` reports what the folder holds."""

        def load_context(self, context: Any) -> None:
            self.folder = Path(context.artifacts["folder"])

        def predict(
            self, context: Any, model_input: list[str], params: dict | None = None
        ) -> list[str]:
            return sorted(p.name for p in self.folder.iterdir())

    # pickled by reference, as lgsid_pipeline.registry.FolderModel (see __getattr__)
    FolderModel.__qualname__ = "FolderModel"
    FolderModel.__module__ = __name__
    globals()["FolderModel"] = FolderModel
    return FolderModel


def __getattr__(name: str) -> Any:
    if name == "FolderModel":
        return _folder_model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def metric_name(key: str) -> str:
    """An MLflow-safe metric name (``hit@10`` -> ``hit_at_10``)."""
    return key.replace("@", "_at_")


def tracking_uri(home: Path | None = None) -> str:
    """Configure and return the MLflow tracking URI: ``LGSID_MLFLOW_TRACKING_URI``, else
    MLflow's own ``MLFLOW_TRACKING_URI``, else a SQLite store under the LGSID home."""
    import mlflow

    store = (home or lgsid_home()) / "mlflow"
    uri = (
        os.environ.get("LGSID_MLFLOW_TRACKING_URI")
        or os.environ.get("MLFLOW_TRACKING_URI")
        or _local_uri(store)
    )
    if uri == _local_uri(store):
        store.mkdir(parents=True, exist_ok=True)
    # MLflow's setters also export MLFLOW_*_URI; left there, the first home's store would
    # pass for the user's own setting and win over every later home in this process.
    exported = {
        name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    }
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in exported.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return uri


def _experiment_id(uri: str, home: Path | None) -> str:
    import mlflow

    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    store = (home or lgsid_home()) / "mlflow"
    # A local store keeps its artifacts beside its database, not in the working directory.
    artifacts = (store / "artifacts").as_uri() if uri == _local_uri(store) else None
    return client.create_experiment(EXPERIMENT, artifact_location=artifacts)


def _local_uri(store: Path) -> str:
    return f"sqlite:///{store / 'mlflow.db'}"


def materialize_hint(name: str) -> str:
    """How to (re)create a registered model: the asset that trains it, as a command."""
    parsed = parse_model_name(name)
    if parsed is None:
        return "materialize the asset that trains it"
    if parsed.city is None:
        return (
            f"materialize the `{parsed.asset}` asset (`lgsid materialize --select {parsed.asset}`)"
        )
    return (
        f"materialize the `{parsed.asset}` asset of city {parsed.city!r} "
        f"(`lgsid materialize --city {parsed.city} --select {parsed.asset}`)"
    )


def folder_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by path relative to it."""
    return {
        p.relative_to(folder).as_posix(): file_sha256(p)
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def register_folder(
    name: str,
    folder: Path,
    params: dict[str, Any],
    metrics: dict[str, float],
    dagster_run_id: str | None,
    tags: dict[str, str] | None = None,
    images: dict[str, bytes] | None = None,
    home: Path | None = None,
    promote: bool = True,
) -> RegisteredModel:
    """Log ``folder`` as a pyfunc model in a new run and register it; alias it ``champion``
    unless ``promote`` is false (a gate decides, then calls :func:`set_champion`).

    The run is tagged with the git commit of the code (``git_sha``) and the Dagster run that
    trained the model (``dagster_run_id``; None outside Dagster)."""
    import mlflow
    import mlflow.pyfunc

    uri = tracking_uri(home)
    experiment_id = _experiment_id(uri, home)
    run_tags = {**(tags or {}), GIT_SHA_TAG: git_sha(), DAGSTER_RUN_TAG: dagster_run_id or "none"}
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=run_tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        finite = {metric_name(k): float(v) for k, v in metrics.items() if v == v}  # drop NaN
        if finite:
            mlflow.log_metrics(finite)
        with tempfile.TemporaryDirectory() as scratch:
            for file_name, png in (images or {}).items():
                path = Path(scratch) / file_name
                path.write_bytes(png)
                mlflow.log_artifact(str(path), artifact_path="plots")
            checksums = Path(scratch) / CHECKSUMS
            checksums.write_text(json.dumps(folder_checksums(folder), indent=1))
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=_folder_model_class()(),
                artifacts={"folder": str(folder), "checksums": str(checksums)},
                pip_requirements=["lgsid_pipeline"],
                registered_model_name=name,
                await_registration_for=0,
            )
        run_id = run.info.run_id
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not versions:
        raise ModelArtifactError(f"MLflow did not register model {name!r} for run {run_id}")
    version = str(max(int(v.version) for v in versions))
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    return RegisteredModel(
        name=name,
        version=version,
        run_id=run_id,
        model_uri=info.model_uri,
        run_url=f"{UI_URL}/#/experiments/{experiment_id}/runs/{run_id}",
    )


def set_champion(name: str, version: str, home: Path | None = None) -> None:
    """Point the ``champion`` alias of ``name`` at ``version``."""
    import mlflow

    tracking_uri(home)
    mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION, str(version))


def champion_version(name: str, home: Path | None = None) -> str | None:
    """The version the ``champion`` alias of ``name`` points at, or None."""
    import mlflow

    tracking_uri(home)
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


def champion_folder(name: str, home: Path | None = None, alias: str = CHAMPION) -> Path:
    """Local folder of the artifacts of ``models:/<name>@<alias>`` (downloaded if remote)."""
    import mlflow

    tracking_uri(home)
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as exc:
        raise ModelArtifactError(
            f"no registered model {name!r} with alias {alias!r}; {materialize_hint(name)}"
        ) from exc
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version.version}"
        )
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a bad store
        raise ModelArtifactError(
            f"artifacts of model {name!r} version {version.version} are unreadable: {exc}"
        ) from exc
    folder = Path(local) / "artifacts" / "folder"
    candidates = [p for p in (Path(local) / "artifacts").glob("*") if p.is_dir()]
    if not folder.is_dir() and candidates:
        folder = candidates[0]
    if not folder.is_dir():
        raise ModelArtifactError(
            f"model {name!r} version {version.version} has no artifact "
            f"folder under {local}; {materialize_hint(name)}"
        )
    _verify_checksums(
        f"model {name!r} version {version.version} (@{alias})",
        name,
        folder,
        Path(local) / "artifacts" / CHECKSUMS,
    )
    return folder


def _verify_checksums(label: str, name: str, folder: Path, manifest: Path) -> None:
    """Raise ``ModelArtifactError`` naming the model and the first missing or changed file."""
    if not manifest.is_file():
        return  # registered before checksums were recorded
    try:
        expected = json.loads(manifest.read_text())
        items = sorted(expected.items())
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelArtifactError(
            f"{label}: checksum file {manifest} is corrupt ({exc}); {materialize_hint(name)}"
        ) from exc
    for relative, digest in items:
        path = folder / relative
        if not path.is_file():
            raise ModelArtifactError(
                f"{label}: artifact file {relative!r} is missing "
                f"(expected {path}); {materialize_hint(name)}"
            )
        if file_sha256(path) != digest:
            raise ModelArtifactError(
                f"{label}: artifact file {relative!r} is corrupt (its "
                f"SHA-256 differs from the one recorded at registration; "
                f"{path}); {materialize_hint(name)}"
            )


def log_run_metrics(
    name: str, metrics: dict[str, float], home: Path | None = None, alias: str = CHAMPION
) -> str:
    """Add metrics to the MLflow run that produced ``models:/<name>@<alias>``; return its id."""
    import mlflow

    tracking_uri(home)
    client = mlflow.MlflowClient()
    try:
        run_id = client.get_model_version_by_alias(name, alias).run_id
    except mlflow.exceptions.MlflowException as exc:
        raise ModelArtifactError(f"no registered model {name!r} with alias {alias!r}") from exc
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [  # one write for all of them (a nightly code report logs about 20)
        Metric(metric_name(key), float(value), now, 0)
        for key, value in metrics.items()
        if value == value  # skip NaN
    ]
    if batch:
        client.log_batch(run_id, metrics=batch)
    return run_id
