"""Jobs for tests/test_warm_runs.py, loaded as a code location by a real code server: one
records its process (pid, parent) in a file, one waits for a file to appear. Their steps run
in the run's own process."""

import os
import time
from pathlib import Path

import dagster as dg


@dg.op(config_schema={"out": str})
def record_process(context: dg.OpExecutionContext) -> None:
    Path(context.op_config["out"]).write_text(f"{os.getpid()} {os.getppid()}")


@dg.op(config_schema={"out": str, "release": str})
def wait_for_release(context: dg.OpExecutionContext) -> None:
    Path(context.op_config["out"]).write_text(f"{os.getpid()} {os.getppid()}")
    deadline = time.monotonic() + 120
    while not Path(context.op_config["release"]).exists() and time.monotonic() < deadline:
        time.sleep(0.1)


@dg.job(executor_def=dg.in_process_executor)
def record_job() -> None:
    record_process()


@dg.job(executor_def=dg.in_process_executor)
def wait_job() -> None:
    wait_for_release()


defs = dg.Definitions(jobs=[record_job, wait_job])
