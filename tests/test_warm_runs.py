"""``WarmRunLauncher``: runs launched against a real code server are forked from the warm
worker, a run process that dies fails its run, cancelling stops a run, changed code
replaces the worker, and a run for another interpreter goes to Dagster's launcher."""

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import PythonFileTarget

from lgsid_pipeline.defs.warm_runs import (
    WORKER_TAG,
    WarmRunLauncher,
    is_daemon_process,
    runs_in_this_python,
    source_fingerprint,
)

JOBS = Path(__file__).with_name("warm_run_jobs.py")
LOCATION = "warm_run_jobs"


@pytest.fixture
def warm(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """A test instance whose launcher is a WarmRunLauncher (preloading only dagster), and a
    workspace with the test jobs served by a real code server."""
    overrides = {
        "run_launcher": {
            "module": "lgsid_pipeline.defs.warm_runs",
            "class": "WarmRunLauncher",
            "config": {"preload": ["dagster"]},
        },
        "run_monitoring": {"cancellation_thread_poll_interval_seconds": 1},
    }
    target = PythonFileTarget(
        python_file=str(JOBS),
        attribute=None,
        working_directory=str(JOBS.parent),
        location_name=LOCATION,
    )
    with (
        dg.instance_for_test(overrides=overrides) as instance,
        WorkspaceProcessContext(instance, target) as process_context,
    ):
        workspace = process_context.create_request_context()
        repository = workspace.get_code_location(LOCATION).get_repository("__repository__")

        def launch(job_name: str, config: dict) -> dg.DagsterRun:
            remote_job = repository.get_full_job(job_name)
            run = instance.create_run_for_job(
                job_def=getattr(_jobs(), job_name),
                run_config={"ops": config},
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
            )
            return instance.launch_run(run.run_id, workspace)

        yield SimpleNamespace(instance=instance, launch=launch, tmp=tmp_path)
        instance.run_launcher.dispose()


def _jobs():
    sys.path.insert(0, str(JOBS.parent))
    import warm_run_jobs

    return warm_run_jobs


def _wait_finished(instance: dg.DagsterInstance, run_id: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run and run.is_finished:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


def _wait_file(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{path} was not written in {timeout}s")


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.message or "" for e in instance.all_logs(run_id)]


def test_a_run_is_forked_from_the_warm_worker(warm: SimpleNamespace) -> None:
    out = warm.tmp / "process.txt"
    run = warm.launch("record_job", {"record_process": {"config": {"out": str(out)}}})
    finished = _wait_finished(warm.instance, run.run_id)
    assert finished.status == dg.DagsterRunStatus.SUCCESS
    pid, parent = map(int, out.read_text().split())
    launcher = warm.instance.run_launcher
    assert isinstance(launcher, WarmRunLauncher)
    assert parent == launcher._worker.process.pid != os.getpid()
    assert finished.tags[WORKER_TAG] == f"warm pid {pid}"
    assert any("forked from warm run worker" in m for m in _messages(warm.instance, run.run_id))

    # a second run is forked from the same worker
    second = warm.tmp / "second.txt"
    run = warm.launch("record_job", {"record_process": {"config": {"out": str(second)}}})
    assert _wait_finished(warm.instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert int(second.read_text().split()[1]) == parent


def test_a_run_process_that_dies_fails_its_run(warm: SimpleNamespace) -> None:
    out = warm.tmp / "process.txt"
    config = {"out": str(out), "release": str(warm.tmp / "never")}
    run = warm.launch("wait_job", {"wait_for_release": {"config": config}})
    pid = int(_wait_file(out).split()[0])
    os.kill(pid, signal.SIGKILL)
    finished = _wait_finished(warm.instance, run.run_id)
    assert finished.status == dg.DagsterRunStatus.FAILURE
    assert any("exited with code -9" in m for m in _messages(warm.instance, run.run_id))


def test_terminate_cancels_a_warm_run(warm: SimpleNamespace) -> None:
    out = warm.tmp / "process.txt"
    config = {"out": str(out), "release": str(warm.tmp / "never")}
    run = warm.launch("wait_job", {"wait_for_release": {"config": config}})
    _wait_file(out)
    assert warm.instance.run_launcher.terminate(run.run_id)
    finished = _wait_finished(warm.instance, run.run_id, timeout=30)
    assert finished.status == dg.DagsterRunStatus.CANCELED
    assert not warm.instance.run_launcher.terminate(run.run_id)  # already finished


def test_changed_code_replaces_the_worker(tmp_path: Path) -> None:
    source = tmp_path / "package"
    source.mkdir()
    (source / "module.py").write_text("A = 1\n")
    launcher = WarmRunLauncher(preload=[])
    launcher.source_dir = source
    try:
        first = launcher._current_worker()
        assert first is not None and launcher._current_worker() is first
        before = source_fingerprint(source)
        (source / "module.py").write_text("A = 22\n")
        assert source_fingerprint(source) != before
        second = launcher._current_worker()
        assert second is not None and second is not first and second.alive
        # the replaced worker ran nothing, so it exits as soon as it is retired
        assert first.process.wait(timeout=30) == 0
    finally:
        launcher.dispose()


def test_a_worker_that_cannot_start_falls_back_to_dagsters_launcher(
    warm: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    (warm.tmp / "dies_on_import.py").write_text("import os\nos._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(warm.tmp))
    warm.instance.run_launcher.preload = ("dies_on_import",)
    out = warm.tmp / "process.txt"
    run = warm.launch("record_job", {"record_process": {"config": {"out": str(out)}}})
    finished = _wait_finished(warm.instance, run.run_id)
    assert finished.status == dg.DagsterRunStatus.SUCCESS
    assert WORKER_TAG not in finished.tags and GRPC_INFO_TAG in finished.tags


def test_which_runs_and_processes_qualify() -> None:
    assert runs_in_this_python(SimpleNamespace(executable_path=sys.executable))
    assert not runs_in_this_python(SimpleNamespace(executable_path="/usr/bin/python2"))
    assert not runs_in_this_python(None)
    assert is_daemon_process(["/venv/bin/dagster-daemon", "run"])
    assert is_daemon_process(["/venv/lib/python3.11/site-packages/dagster/_daemon/__main__.py"])
    assert not is_daemon_process(["/venv/bin/dagster-webserver"])
    assert not is_daemon_process(["/venv/lib/python3.11/site-packages/dagster/__main__.py"])
