"""A run launcher whose run processes start warm: ``WarmRunLauncher`` forks each run from a
worker process that has already imported torch, MLflow, pandas, DuckDB, Dagster and the code
location, instead of spawning an interpreter that imports them again (about 5 s of imports
and 2 s of start on 2 cores, paid by every sensor or scheduled run before its first step).

The worker is started by the process that launches runs (the daemon, for queued runs) and is
replaced when a source file of ``lgsid_pipeline`` changes, so a run never executes stale code.
A run whose code location uses another interpreter, or any run when the worker cannot start,
is launched by Dagster's ``DefaultRunLauncher`` through the code server as before.
Cancelling a run sets it CANCELING in run storage; the run process polls for that and
interrupts itself, so the webserver can cancel a run that the daemon launched.

The worker speaks JSON lines: run requests come in on its stdin; replies (``ready``,
``started`` with the run's pid, ``exited`` with its exit code) go out on a separate pipe,
because the forked runs share its stdout and stderr with the launcher's process."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.launcher import DefaultRunLauncher, LaunchRunContext
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._serdes import ConfigurableClassData

PACKAGE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_PRELOAD: tuple[str, ...] = (  # what a nightly run imports (measured), heaviest first
    "torch",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "alembic.command",
    "dagster",
    "dagster._cli.api",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.execution.run_cancellation_thread",
    "pandas",
    "pyarrow.parquet",
    "pyarrow.dataset",  # pyarrow.parquet.read_table imports it on its first call
    "duckdb",
    "matplotlib.pyplot",
    "geopandas",
    "pyogrio",
    "tokenizers",
    "safetensors.torch",
    "lgsid_pipeline.definitions",
    "lgsid_pipeline.encoder.frozen",
    "lgsid_pipeline.tokenizer.lgsid",
    "lgsid_pipeline.tokenizer.rqkmeans",
    "lgsid_pipeline.tokenizer.rqvae",
    "lgsid_pipeline.tokenizer.evaluate",
    "lgsid_pipeline.alignment.evaluate",
    "lgsid_pipeline.metrics.geography",
)
WORKER_TAG = "lgsid/run_worker"
WORKER_START_TIMEOUT_S = 120.0
REAP_INTERVAL_S = 0.5


def source_fingerprint(package_dir: Path = PACKAGE_DIR) -> str:
    """What identifies the package's code on disk: each ``.py`` file's path, size and mtime
    (stat only, a few milliseconds)."""
    entries = []
    for path in sorted(package_dir.rglob("*.py")):
        stat = path.stat()
        entries.append(f"{path.relative_to(package_dir)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- the worker process


def execute_run(run_id: str, serialized_instance_ref: str) -> int:
    """Execute one launched run in this (forked) process, as ``dagster api execute_run``
    does, with a thread that interrupts the run when it is set CANCELING; returns the exit
    code (1 when the run failed)."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.execution.run_cancellation_thread import start_run_cancellation_thread
    from dagster._core.instance import InstanceRef
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts

    with capture_interrupts():
        ref = deserialize_value(serialized_instance_ref, InstanceRef)
        with dg.DagsterInstance.from_ref(ref) as instance:
            thread, stop = start_run_cancellation_thread(instance, run_id)
            try:
                return _execute_run_command_body(
                    run_id, instance, lambda _event: None, set_exit_code_on_failure=True
                )
            finally:
                stop.set()
                thread.join(timeout=15)


def _send(fd: int, message: Mapping[str, Any]) -> None:
    # OSError: the launcher is gone (daemon killed); its runs go on regardless
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps(dict(message)) + "\n").encode())


def _fork_run(request: Mapping[str, str], replies_fd: int) -> int:
    """Fork a process that executes the requested run and exits; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.close(replies_fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        code = execute_run(request["run_id"], request["instance_ref"])
    except BaseException:  # noqa: BLE001 - the child reports and exits, whatever happened
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(preload: Sequence[str], replies_fd: int) -> None:
    """The worker's loop: import ``preload``, then fork a run process per request line on
    stdin and report its pid and, once reaped, its exit code; returns when stdin closes and
    every run it forked has exited."""
    started = time.perf_counter()
    fingerprint = source_fingerprint()
    failed = []
    for module in preload:
        try:
            __import__(module)
        except Exception as exc:  # noqa: BLE001 - a run imports it itself, and says why
            failed.append(f"{module}: {exc}")
    if "matplotlib.pyplot" in sys.modules:  # the first figure of a process costs 0.3 s more
        try:
            from lgsid_pipeline.plots import warm_up

            warm_up()
        except Exception as exc:  # noqa: BLE001 - a run renders its figures regardless
            failed.append(f"figure warm-up: {exc}")
    _send(
        replies_fd,
        {
            "event": "ready",
            "pid": os.getpid(),
            "fingerprint": fingerprint,
            "preload_seconds": round(time.perf_counter() - started, 2),
            "preload_failed": failed,
        },
    )
    runs: dict[int, str] = {}
    stdin_open = True
    while stdin_open or runs:
        readable = select.select([sys.stdin], [], [], REAP_INTERVAL_S)[0] if stdin_open else []
        if not stdin_open:
            time.sleep(REAP_INTERVAL_S)
        if readable:
            line = sys.stdin.readline()
            if not line:
                stdin_open = False
            elif line.strip():
                request = json.loads(line)
                pid = _fork_run(request, replies_fd)
                runs[pid] = request["run_id"]
                _send(replies_fd, {"event": "started", "run_id": request["run_id"], "pid": pid})
        while runs:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            run_id = runs.pop(pid, None)
            if run_id is not None:
                code = os.waitstatus_to_exitcode(status)
                _send(replies_fd, {"event": "exited", "run_id": run_id, "exit_code": code})


# ---------------------------------------------------------------- the launcher side


class WarmWorker:
    """A started worker process, seen from the launcher: requests go to its stdin; a thread
    reads its replies and hands each run's exit to ``on_exit``."""

    def __init__(self, preload: Sequence[str], on_exit: Callable[[str, int], None]) -> None:
        read_fd, write_fd = os.pipe()
        command = [sys.executable, "-m", __name__, "--replies-fd", str(write_fd)]
        self.process = subprocess.Popen(
            [*command, *preload], stdin=subprocess.PIPE, pass_fds=(write_fd,), text=True
        )
        os.close(write_fd)
        self._replies = os.fdopen(read_fd)
        self._on_exit = on_exit
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._started: dict[str, threading.Event] = {}
        self.pids: dict[str, int] = {}
        self.info: dict[str, Any] = {}
        threading.Thread(target=self._read_replies, name="warm-run-worker", daemon=True).start()

    def _read_replies(self) -> None:
        for line in self._replies:
            message = json.loads(line)
            if message["event"] == "ready":
                self.info = message
                self._ready.set()
            elif message["event"] == "started":
                self.pids[message["run_id"]] = message["pid"]
                self._started[message["run_id"]].set()
            elif message["event"] == "exited":
                self._on_exit(message["run_id"], message["exit_code"])
        self._ready.set()  # the worker exited: wake whoever waits
        for event in list(self._started.values()):
            event.set()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float) -> bool:
        """Whether the worker finished its imports (False: it died or took too long)."""
        return self._ready.wait(timeout) and self.alive and bool(self.info)

    def start_run(self, run_id: str, serialized_instance_ref: str, timeout: float) -> int:
        """Fork the run in the worker; its pid."""
        with self._lock:
            self._started[run_id] = threading.Event()
            request = {"run_id": run_id, "instance_ref": serialized_instance_ref}
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        if not self._started[run_id].wait(timeout) or run_id not in self.pids:
            raise RuntimeError(f"the warm run worker did not start run {run_id}")
        return self.pids[run_id]

    def retire(self) -> None:
        """No more runs: the worker exits once the runs it forked have."""
        if self.process.stdin and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()


def runs_in_this_python(origin: Any) -> bool:
    """Whether a run of this job code origin (``JobPythonOrigin``) executes with this
    process's interpreter, so that a worker forked from here can run it."""
    if origin is None or not getattr(origin, "executable_path", None):
        return False
    return Path(origin.executable_path).resolve() == Path(sys.executable).resolve()


def is_daemon_process(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is a ``dagster-daemon`` process's (also as ``dagster dev`` starts it)."""
    first = Path(argv[0]) if argv else Path()
    return first.name == "dagster-daemon" or first.parts[-2:] == ("_daemon", "__main__.py")


class WarmRunLauncher(DefaultRunLauncher):
    """Launch runs by forking them from a warm worker process (module docstring); falls back
    to ``DefaultRunLauncher`` when that cannot work. Config: ``preload``, the modules the
    worker imports before its first run (default ``DEFAULT_PRELOAD``)."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        preload: Iterable[str] | None = None,
    ) -> None:
        super().__init__(inst_data=inst_data)
        self.preload = tuple(DEFAULT_PRELOAD if preload is None else preload)
        self.source_dir = PACKAGE_DIR  # the code whose change replaces the worker
        self._worker: WarmWorker | None = None
        self._worker_fingerprint = ""
        self._retired: list[WarmWorker] = []
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Start the worker in the background, so that the first run launched starts warm."""
        threading.Thread(target=self._current_worker, name="warm-up", daemon=True).start()

    @classmethod
    def config_type(cls) -> dict:
        return {"preload": dg.Field([str], is_required=False)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> WarmRunLauncher:
        return cls(inst_data=inst_data, preload=config_value.get("preload"))

    def _current_worker(self) -> WarmWorker | None:
        """The live worker for the code on disk now (started or replaced as needed), or
        None when it cannot start."""
        with self._lock:
            fingerprint = source_fingerprint(self.source_dir)
            worker = self._worker
            if worker and (not worker.alive or self._worker_fingerprint != fingerprint):
                worker.retire()
                self._retired = [w for w in self._retired if w.alive] + [worker]
                worker = None
            if worker is None:
                worker = WarmWorker(self.preload, self._run_exited)
                self._worker, self._worker_fingerprint = worker, fingerprint
            if not worker.wait_ready(WORKER_START_TIMEOUT_S):
                worker.retire()  # a worker still importing after the timeout exits too
                self._worker = None
                return None
            return worker

    def _run_exited(self, run_id: str, exit_code: int) -> None:
        """A forked run process exited: a run it left unfinished failed (as the code server
        reports a run process that died)."""
        if not self.has_instance:
            return
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return
        self._instance.report_engine_event(
            f"Run process for {run_id} exited with code {exit_code} before the run finished",
            run,
            cls=self.__class__,
        )
        self._instance.report_run_failed(run)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        same_python = (
            origin is not None
            and Path(origin.executable_path).resolve() == Path(sys.executable).resolve()
        )
        worker = self._current_worker() if same_python and self.has_instance else None
        if worker is None:
            super().launch_run(context)
            return
        from dagster._serdes import serialize_value

        ref = serialize_value(self._instance.get_ref())
        pid = worker.start_run(run.run_id, ref, WORKER_START_TIMEOUT_S)
        self._instance.add_run_tags(run.run_id, {WORKER_TAG: f"warm pid {pid}"})
        self._instance.report_engine_event(
            f"Launched in process {pid}, forked from warm run worker {worker.info['pid']} "
            f"(imports done in {worker.info['preload_seconds']}s when it started)",
            run,
            cls=self.__class__,
        )

    def terminate(self, run_id: str) -> bool:
        if not self.has_instance:
            return False
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        if WORKER_TAG not in run.tags:
            return super().terminate(run_id)
        # the run process polls for CANCELING and interrupts itself
        self._instance.report_run_canceling(run)
        return True

    def dispose(self) -> None:
        for worker in [self._worker, *self._retired]:
            if worker is not None:
                worker.retire()
        self._worker = None
        super().dispose()


class WarmQueuedRunCoordinator(QueuedRunCoordinator):
    """Dagster's run queue (same config), which in the daemon, the process that launches
    queued runs, warms the instance's ``WarmRunLauncher`` as the daemon starts."""

    def register_instance(self, instance: dg.DagsterInstance) -> None:
        super().register_instance(instance)
        launcher = instance.run_launcher
        if is_daemon_process(sys.argv) and isinstance(launcher, WarmRunLauncher):
            launcher.warm_up()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lgsid_pipeline.defs.warm_runs --replies-fd N MODULE...``: the worker."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "--replies-fd":
        raise SystemExit("usage: python -m lgsid_pipeline.defs.warm_runs --replies-fd N ...")
    serve(args[2:], int(args[1]))


if __name__ == "__main__":
    main()
