"""Freshness on the real cities: what a run costs when little or nothing changed.

Usage: LGSID_BENCH_HOME=<a home with both real cities through semantic IDs, e.g. the one
bench/pipeline.py leaves> .venv/bin/python bench/freshness.py
(writes bench/results/freshness.json; works on a copy of that home, which stays as it was).

Measures, on 2 cores:
- ``nightly_noop_seconds``: the nightly job (ingest, embeddings, three code tables) of a city
  with nothing new, in one process, after one run that records the source fingerprints;
  it must encode nothing and write no table version;
- ``backfill_1000_items_seconds``: 1,000 venues landed for New York until they have
  embeddings and codes of all three tokenizers, through the landing sensor and the nightly
  job in this process (median of ``BACKFILL_REPEATS`` landings, one after another, after a
  small warm-up landing); no model is retrained and no earlier item's code changes unless
  its content changed (a new branch can make its name a chain's). Every path below lands
  the same plan (``landing_plan``) on its own copy of the bench home, so each re-encodes
  the same venues;
- ``backfill_1000_items_daemon_seconds``: the same through a real ``dagster-daemon`` beside
  a long-lived code server, as ``make ui`` (``dagster dev``) and deploy/ run it: the median
  of ``BACKFILL_REPEATS`` landings after a small one that warms it. Each is the wait for the
  landing sensor's next 60 s tick (0 to 60 s), the queue, the start of the run process (the
  instance's ``WarmRunLauncher`` forks it from a warm worker) and the run;
  ``details.daemon.worst_case_seconds`` puts the whole interval in place of the wait.
  ``details.daemon_python_module_workspace``: the same with a ``python_module`` workspace,
  whose code server the daemon starts itself and replaces with a fresh process every 60 s;
- ``nightly_job_executor``: the nightly selection of New York with nothing new through
  ``lgsid materialize`` under the in-process and the multiprocess executor, alternating;
- ``demo_seconds``: ``make demo`` in a fresh clone of HEAD, the install included
  (``bench/demo.py``, which also runs on its own);
- the code location's import time against ``import dagster`` alone (side by side);
- ``encode_ratio_to_raw_bf16``: two city processes encoding at once with the threads the
  compute pool gives them (cores / 2 each), against one raw forward of the same weights
  over every core, items/s over items/s, both in the precision ``auto`` picks (bf16 where
  the CPU has it natively, else fp32; ``details.encode.dtype`` says which).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from code_location import IMPORTS, timed_import
from common import REAL_CITIES, land_new_venues, use_instance_settings, write_results
from demo import measure_demo

from lgsid_pipeline.defs.warm_runs import WORKER_TAG

BACKFILL_CITY = "new-york"
BACKFILL_ITEMS = 1000
ENCODE_ITEMS = 1200
IMPORT_REPEATS = 5
EXECUTOR_REPEATS = 2
BACKFILL_REPEATS = 3
VERSIONED = ("ingest", "embeddings", "semantic_ids")
DAEMON_TIMEOUT_S = 600
WARM_UP_ITEMS = 10
LANDING_SEED = 20


def landing_plan() -> list[tuple[str, int, int]]:
    """(tag, venues, seed) of each landing, the same for every path (in process, daemon with
    either workspace), each on its own copy of the bench home: a small warm-up landing, then
    ``BACKFILL_REPEATS`` of ``BACKFILL_ITEMS``. Tags sort in landing order, so each run merges
    its one new file (no full read)."""
    sizes = [WARM_UP_ITEMS] + [BACKFILL_ITEMS] * BACKFILL_REPEATS
    return [(f"land{n}", size, LANDING_SEED + n) for n, size in enumerate(sizes)]


def _scratch_home(source: Path) -> Path:
    """A copy of the bench home's ``home`` and ``dagster`` folders to work on."""
    scratch = Path(tempfile.mkdtemp(prefix="lgsid-freshness-"))
    for sub in ("home", "dagster"):
        shutil.copytree(source / sub, scratch / sub, symlinks=True)
    use_instance_settings(scratch / "dagster")
    _use_home(scratch)
    return scratch


def _use_home(scratch: Path) -> None:
    """Point this process (and what it starts) at a scratch copy's home and instance."""
    os.environ["LGSID_HOME"] = str(scratch / "home")
    os.environ["DAGSTER_HOME"] = str(scratch / "dagster")


def _versions() -> dict[str, dict[str, str]]:
    from lgsid_pipeline.warehouse import Warehouse

    warehouse = Warehouse()
    return {
        city: {s: (warehouse.published(city, s) or {}).get("version", "") for s in VERSIONED}
        for city in REAL_CITIES
    }


def _coded(new_ids: list[str]) -> dict[str, int]:
    from lgsid_pipeline.catalog import TOKENIZER_KINDS
    from lgsid_pipeline.warehouse import Warehouse

    warehouse = Warehouse()
    out = {
        kind: int(
            warehouse.read_table("semantic_ids", BACKFILL_CITY, kind)["item_id"].isin(new_ids).sum()
        )
        for kind in TOKENIZER_KINDS
    }
    embeddings = warehouse.read_table("item_embeddings", BACKFILL_CITY, "aligned")
    out["embedded"] = int(embeddings["item_id"].isin(new_ids).sum())
    return out


def _codes() -> dict[str, object]:
    from lgsid_pipeline.catalog import TOKENIZER_KINDS
    from lgsid_pipeline.warehouse import Warehouse

    warehouse = Warehouse()
    return {
        kind: warehouse.read_table("semantic_ids", BACKFILL_CITY, kind).set_index("item_id")["code"]
        for kind in TOKENIZER_KINDS
    }


def _content():
    """Each New York item's content hash (what its embedding is computed from)."""
    from lgsid_pipeline.warehouse import Warehouse

    items = Warehouse().read_table("items", BACKFILL_CITY)
    return items.set_index("item_id")["content_hash"]


def _nightly(instance, city: str) -> tuple[float, bool]:
    import dagster as dg

    from lgsid_pipeline.catalog import NIGHTLY_JOB_NAME
    from lgsid_pipeline.runner import execute_run_request

    started = time.perf_counter()
    result = execute_run_request(dg.RunRequest(partition_key=city), NIGHTLY_JOB_NAME, instance)
    return time.perf_counter() - started, result.success


def nightly_noop(instance) -> dict:
    """Each city's nightly run with nothing new (after one run that records fingerprints)."""
    out: dict = {"seconds": {}, "warmup_seconds": {}, "versions_unchanged": {}}
    for city in REAL_CITIES:
        out["warmup_seconds"][city] = round(_nightly(instance, city)[0], 2)
        before = _versions()[city]
        seconds, ok = _nightly(instance, city)
        if not ok:
            sys.exit(f"nightly run of {city} failed")
        out["seconds"][city] = round(seconds, 2)
        out["versions_unchanged"][city] = before == _versions()[city]
        print(f"nightly no-op {city}: {seconds:.1f}s", flush=True)
    return out


def executor_choice(city: str) -> dict:
    """The nightly job's selection for ``city`` with nothing new, run by ``lgsid materialize``
    in a fresh process under each executor, alternating (``EXECUTOR_REPEATS`` each, median):
    the per-step process start-up the in-process executor saves, behind the nightly job's
    choice. Heavy training steps are minutes each, so their one start-up is noise."""
    from lgsid_pipeline.catalog import CITY_CODE_ASSETS

    lgsid = Path(sys.executable).with_name("lgsid")
    command = [str(lgsid), "materialize", "--city", city, "--select", ",".join(CITY_CODE_ASSETS)]
    seconds: dict[str, list[float]] = {"in_process": [], "multiprocess": []}
    for _ in range(EXECUTOR_REPEATS):
        for executor, runs in seconds.items():
            started = time.perf_counter()
            proc = subprocess.run(
                command, env={**os.environ, "LGSID_EXECUTOR": executor}, capture_output=True
            )
            if proc.returncode:
                sys.exit(f"{executor} nightly selection failed: {proc.stderr.decode()[-2000:]}")
            runs.append(time.perf_counter() - started)
    median = {name: round(statistics.median(runs), 2) for name, runs in seconds.items()}
    print(f"nightly selection of {city} by executor: {median}", flush=True)
    return {
        "city": city,
        "median_seconds": median,
        "runs": {name: [round(r, 2) for r in runs] for name, runs in seconds.items()},
        "chosen_for_nightly_job": min(median, key=lambda name: median[name]),
    }


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Seconds each step of a run took, from its event log."""
    started, out = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = record.timestamp
        elif event.event_type_value == "STEP_SUCCESS":
            out[event.step_key] = round(record.timestamp - started[event.step_key], 2)
    return out


def code_changes(codes_before: dict, content_before) -> dict:
    """Whether every earlier item whose content is unchanged kept its code of each tokenizer
    (a new branch can turn an earlier venue's name into a chain's, which changes its brand,
    so its content), and how many earlier items changed content or code."""
    codes_after, content_after = _codes(), _content()
    same = content_before.index[
        content_before.eq(content_after.reindex(content_before.index)).to_numpy()
    ]
    return {
        "earlier_codes_unchanged": {
            kind: bool((codes_after[kind].loc[same] == old.loc[same]).all())
            for kind, old in codes_before.items()
        },
        "earlier_items_content_changed": int(len(content_before) - len(same)),
        "earlier_items_recoded": {
            kind: int((codes_after[kind].loc[old.index] != old).sum())
            for kind, old in codes_before.items()
        },
    }


def backfill_once(instance, home: Path, tag: str, n: int, seed: int) -> dict:
    """Land ``n`` venues, tick the landing sensor, run what it asks for, in this process."""
    from lgsid_pipeline.catalog import NIGHTLY_JOB_NAME
    from lgsid_pipeline.runner import execute_run_request, tick_sensor

    codes_before, content_before = _codes(), _content()
    started = time.perf_counter()
    new_ids = land_new_venues(home, BACKFILL_CITY, tag, n, seed=seed)
    tick = tick_sensor("landing_sensor", instance)
    results = [execute_run_request(r, NIGHTLY_JOB_NAME, instance) for r in tick.run_requests]
    seconds = time.perf_counter() - started
    changes = code_changes(codes_before, content_before)
    print(f"backfill of {n} in process: {seconds:.1f}s", flush=True)
    return {
        "seconds": round(seconds, 2),
        "success": bool(results) and all(r.success for r in results),
        "requested": [r.partition_key for r in tick.run_requests],
        "step_seconds": step_seconds(instance, results[0].run_id) if results else {},
        "coded": _coded(new_ids),
        **changes,
    }


def backfill_in_process(instance, home: Path) -> dict:
    """The landing plan through the landing sensor and the nightly job in this process, one
    landing after another (this machine is shared and noisy): the median over the landings
    after the warm-up, and every run."""
    warm_up, *plan = landing_plan()
    backfill_once(instance, home, *warm_up)
    runs = [backfill_once(instance, home, tag, n, seed) for tag, n, seed in plan]
    return {
        "seconds": round(statistics.median(r["seconds"] for r in runs), 2),
        "runs_seconds": [r["seconds"] for r in runs],
        "success": all(r["success"] for r in runs),
        "runs": runs,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_code_server(scratch: Path, log) -> tuple[subprocess.Popen, str]:
    """A long-lived code server of the code location (as ``dagster dev`` and deploy/ run
    one), serving once it answers a health check; the workspace entry that points at it."""
    port = _free_port()
    dagster = str(Path(sys.executable).parent / "dagster")
    server = subprocess.Popen(
        [dagster, "code-server", "start", "-m", "lgsid_pipeline.definitions"]
        + ["-h", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=scratch,
    )
    health = [dagster, "api", "grpc-health-check", "-p", str(port)]
    deadline = time.monotonic() + 120
    while subprocess.run(health, capture_output=True).returncode != 0:
        if server.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the code server did not start (see {log.name})")
        time.sleep(1)
    entry = (
        "  - grpc_server:\n      host: 127.0.0.1\n"
        f"      port: {port}\n      location_name: lgsid_pipeline.definitions\n"
    )
    return server, entry


def backfill_daemon(scratch: Path, code_server: bool) -> dict:
    """The landing plan through a real dagster-daemon (default 60 s sensor interval), its
    warm-up landing's run warming the daemon: each later landing's latency and its parts,
    and the worst case (a landing just after a tick waits the whole interval).
    ``code_server``: the daemon talks to a long-lived code server (as under ``make ui``
    and in deploy/); else it starts its own from a ``python_module`` workspace, and, as
    Dagster's daemon does, replaces it with a fresh process every 60 s."""
    import dagster as dg

    from lgsid_pipeline.defs.automation import SENSOR_INTERVAL_S

    mode = "code_server" if code_server else "python_module"
    log = open(scratch / f"daemon-{mode}.log", "w")  # noqa: SIM115 - closed below
    server, entry = (
        _start_code_server(scratch, log)
        if code_server
        else (None, "  - python_module: lgsid_pipeline.definitions\n")
    )
    workspace = scratch / f"workspace-{mode}.yaml"
    workspace.write_text("load_from:\n" + entry)
    instance = dg.DagsterInstance.from_config(str(scratch / "dagster"))
    home = scratch / "home"

    def sensor_runs() -> list:
        tags = {"dagster/sensor_name": "landing_sensor"}
        return list(instance.get_runs(filters=dg.RunsFilter(tags=tags)))

    def land_and_wait(tag: str, n: int, seed: int, deadline: float):
        known = {r.run_id for r in sensor_runs()}
        codes_before, content_before = _codes(), _content()
        started, landed_at = time.perf_counter(), time.time()
        # names sort after every earlier landed file, so the run merges them (no full read)
        new_ids = land_new_venues(home, BACKFILL_CITY, tag, n, seed=seed)
        while time.monotonic() < deadline:
            fresh = [r for r in sensor_runs() if r.run_id not in known and r.is_finished]
            if fresh:
                seconds = time.perf_counter() - started
                return fresh[0], seconds, landed_at, new_ids, codes_before, content_before
            for process in (daemon, server):
                if process is not None and process.poll() is not None:
                    sys.exit(f"{process.args[0]} exited with {process.returncode}")
            time.sleep(0.5)
        sys.exit("the daemon's landing sensor run did not finish in time")

    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=scratch,
    )
    landings = []
    try:
        deadline = time.monotonic() + DAEMON_TIMEOUT_S
        (warm_up_tag, warm_up_n, warm_up_seed), *plan = landing_plan()
        warm_up = land_and_wait(warm_up_tag, warm_up_n, warm_up_seed, deadline)[0]
        for tag, n, seed in plan:
            run, seconds, landed_at, new_ids, codes, content = land_and_wait(tag, n, seed, deadline)
            stats = instance.get_run_stats(run.run_id)
            parts = {  # landing -> sensor tick -> queue -> launched process -> run finished
                "tick_wait_seconds": (stats.enqueued_time or 0) - landed_at,
                "queued_to_launched_seconds": (stats.launch_time or 0) - (stats.enqueued_time or 0),
                "launched_to_started_seconds": (stats.start_time or 0) - (stats.launch_time or 0),
                "run_seconds": (stats.end_time or 0) - (stats.start_time or 0),
            }
            after_tick = sum(v for k, v in parts.items() if k != "tick_wait_seconds")
            landings.append(
                {
                    "seconds": round(seconds, 2),
                    "status": run.status.value,
                    "run_worker": run.tags.get(WORKER_TAG),
                    **{k: round(v, 2) for k, v in parts.items()},
                    "after_tick_seconds": round(after_tick, 2),
                    "step_seconds": step_seconds(instance, run.run_id),
                    "coded": _coded(new_ids),
                    **code_changes(codes, content),
                }
            )
            print(f"backfill through the daemon ({mode}): {landings[-1]}", flush=True)
    finally:
        for process in (daemon, server):
            if process is not None:
                process.send_signal(signal.SIGINT)  # a code server stops on Ctrl-C only
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
        log.close()
    after_tick = [r["after_tick_seconds"] for r in landings]
    return {
        "seconds": round(statistics.median(r["seconds"] for r in landings), 2),
        "runs_seconds": [r["seconds"] for r in landings],
        "after_tick_seconds": round(statistics.median(after_tick), 2),
        # a landing just after a tick waits the whole interval, then the run as measured
        "worst_case_seconds": round(SENSOR_INTERVAL_S + statistics.median(after_tick), 2),
        "worst_case_slowest_seconds": round(SENSOR_INTERVAL_S + max(after_tick), 2),
        "success": all(r["status"] == "SUCCESS" for r in landings),
        "warm_up_run_worker": warm_up.tags.get(WORKER_TAG),
        "sensor_interval_s": SENSOR_INTERVAL_S,
        "workspace": mode,
        "runs": landings,
    }


def import_times() -> dict:
    """Fresh-process import of the code location and of dagster, alternating."""
    seconds: dict[str, list[float]] = {name: [] for name in IMPORTS}
    for repeat in range(IMPORT_REPEATS + 1):
        for name, statement in IMPORTS.items():
            took, _ = timed_import(statement)
            if repeat:  # the first round warms the file cache
                seconds[name].append(round(took, 3))
    return {name: statistics.median(values) for name, values in seconds.items()}


def _prompts(n: int) -> list[str]:
    from lgsid_pipeline.encoder.prompt import item_prompts
    from lgsid_pipeline.warehouse import Warehouse

    items = Warehouse().read_table("items", BACKFILL_CITY).head(n)
    return item_prompts(items)


def encode_worker(mode: str, n: int, threads: int, out: Path) -> None:
    """One encoding process: ``pipeline`` (TextEncoder.encode) or ``raw`` (the same weights,
    batches and precision, a bare forward and mean pool). Both use the precision the
    pipeline's ``auto`` picks on this CPU: bf16 autocast where the CPU has native bf16, else
    fp32 (emulated bf16 is far slower than fp32, so no pipeline run would use it)."""
    import torch

    from lgsid_pipeline.encoder import TextEncoder
    from lgsid_pipeline.encoder.model import ENCODE_BATCH_SIZE, resolve_bf16

    torch.set_num_threads(threads)
    use_bf16 = resolve_bf16("auto")
    prompts = _prompts(n)
    encoder = TextEncoder.load()
    encoder.eval()
    started = time.perf_counter()
    if mode == "pipeline":
        encoder.encode(prompts, dtype="auto")
    else:  # the library's batching (longest first) and precision, no wrapper
        ordered = sorted(prompts, key=len, reverse=True)
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16),
        ):
            for start in range(0, len(ordered), ENCODE_BATCH_SIZE):
                batch = encoder.tokenizer(
                    ordered[start : start + ENCODE_BATCH_SIZE],
                    padding=True,
                    truncation=True,
                    max_length=encoder.max_length,
                    return_tensors="pt",
                )
                hidden = encoder.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                (hidden * mask).sum(1) / mask.sum(1)
    seconds = time.perf_counter() - started
    dtype = "bf16" if use_bf16 else "fp32"
    out.write_text(json.dumps({"items": len(prompts), "seconds": seconds, "dtype": dtype}))


def encode_ratio(scratch: Path) -> dict:
    """Two pipeline encoders at once (cores / 2 threads each) against one raw forward."""
    from lgsid_pipeline.threads import available_cores

    cores = available_cores()

    def spawn(mode: str, n: int, threads: int, tag: str) -> tuple[subprocess.Popen, Path]:
        out = scratch / f"encode-{tag}.json"
        command = [
            sys.executable,
            __file__,
            "--encode-worker",
            mode,
            str(n),
            str(threads),
            str(out),
        ]
        return subprocess.Popen(command), out

    raw, raw_out = spawn("raw", ENCODE_ITEMS, cores, "raw")
    raw.wait()
    started = time.perf_counter()
    pair = [spawn("pipeline", ENCODE_ITEMS // 2, max(1, cores // 2), f"city{i}") for i in (0, 1)]
    for process, _ in pair:
        process.wait()
    wall = time.perf_counter() - started
    raw_figures = json.loads(raw_out.read_text())
    raw_rate = raw_figures["items"] / raw_figures["seconds"]
    items = sum(json.loads(out.read_text())["items"] for _, out in pair)
    combined = items / wall  # includes each process's model load
    encode_only = sum(
        json.loads(out.read_text())["items"] / json.loads(out.read_text())["seconds"]
        for _, out in pair
    )
    print(f"encode: raw {raw_rate:.0f}/s, two cities {encode_only:.0f}/s", flush=True)
    return {
        "dtype": raw_figures["dtype"],
        "raw_items_per_s": round(raw_rate, 1),
        "two_cities_items_per_s": round(encode_only, 1),
        "two_cities_wall_items_per_s": round(combined, 1),
        "ratio": round(encode_only / raw_rate, 3),
        "cores": cores,
        "items": ENCODE_ITEMS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encode-worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--skip-daemon", action="store_true", help="no dagster-daemon run")
    parser.add_argument(
        "--skip-demo", action="store_true", help="no `make demo` from a fresh clone"
    )
    args = parser.parse_args()
    if args.encode_worker:
        mode, n, threads, out = args.encode_worker
        encode_worker(mode, int(n), int(threads), Path(out))
        return
    source = os.environ.get("LGSID_BENCH_HOME")
    if not source or not (Path(source) / "home" / "warehouse").is_dir():
        sys.exit("set LGSID_BENCH_HOME to a home with both real cities through semantic IDs")
    scratch = _scratch_home(Path(source))
    os.environ.setdefault("LGSID_EXECUTOR", "in_process")
    from lgsid_pipeline.runner import get_instance

    instance = get_instance()
    imports = import_times()
    print(f"imports: {imports}", flush=True)
    noop = nightly_noop(instance)
    executors = executor_choice(BACKFILL_CITY)
    backfill = backfill_in_process(instance, scratch / "home")
    # the daemon as `make ui` (dagster dev) and deploy/ run it, beside a long-lived code
    # server; and with a python_module workspace, whose code server it starts and renews
    daemons: dict[bool, dict] = {}
    for code_server in () if args.skip_daemon else (False, True):
        own = _scratch_home(Path(source))  # each path lands the same plan on its own copy
        daemons[code_server] = backfill_daemon(own, code_server=code_server)
        shutil.rmtree(own, ignore_errors=True)
    _use_home(scratch)
    daemon, daemon_own_server = daemons.get(True), daemons.get(False)
    encode = encode_ratio(scratch)
    demo = None if args.skip_demo else measure_demo()
    out = {
        "backfill_1000_items_seconds": backfill["seconds"],
        "backfill_1000_items_daemon_seconds": daemon["seconds"] if daemon else None,
        "nightly_noop_seconds": noop["seconds"],
        "code_location_import_seconds": imports["definitions"],
        "dagster_import_seconds": imports["dagster"],
        "encode_ratio_to_raw_bf16": encode["ratio"],
        "pipeline_encode_items_per_s": encode["two_cities_items_per_s"],
        "demo_seconds": demo["demo_seconds"] if demo else None,
        "nightly_job_executor": executors,
        "details": {
            "nightly": noop,
            "backfill": backfill,
            "daemon": daemon,
            "daemon_python_module_workspace": daemon_own_server,
            "encode": encode,
            "demo": demo,
        },
        "notes": "demo_seconds: `make demo` in a fresh clone of HEAD, install included "
        "(bench/demo.py); the nightly and in-process backfill runs execute in this process "
        "(no import cost); "
        "the daemon backfills include the wait for the sensor's next 60 s tick; the headline "
        "one runs beside a long-lived code server (make ui, deploy/), "
        "details.daemon_python_module_workspace with the code server the daemon starts.",
    }
    print(json.dumps(out, indent=2, default=str))
    write_results(
        "freshness",
        out,
        {
            "source_home": source,
            "backfill": {"city": BACKFILL_CITY, "items": BACKFILL_ITEMS},
            "encode_items": ENCODE_ITEMS,
            "import_repeats": IMPORT_REPEATS,
        },
    )
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
