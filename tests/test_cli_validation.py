"""The lgsid command answers bad input with one error line and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lgsid_pipeline.cli as cli
from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.cli import main

REPO = Path(__file__).resolve().parent.parent

# Files and folders the cases name as {placeholder}; see the `paths` fixture.
CONFIG_TEXTS: dict[str, str] = {
    "bad_yaml": "ops: [unclosed\n  recommender_datasets: {config: \n",
    "bad_json": '{"ops": {"din": }',  # written as bad_json.json
    "list_yaml": "- ops\n- resources\n",
    "scalar_yaml": "just some text\n",
    "unknown_key": "opz:\n  din: {config: {epochs: 1}}\n",
    "ops_list": "ops: [1, 2]\n",
    "op_scalar": "ops:\n  recommender_datasets: 3\n",
    "op_config_list": "ops:\n  recommender_datasets:\n    config: [1]\n",
    "unknown_op": "ops:\n  no_such_asset:\n    config: {epochs: 1}\n",
    "bad_resource": "resources:\n  workspace:\n    config: {no_such_setting: 1}\n",
    "bad_op_value": "ops:\n  din:\n    config: {epochs: many}\n",
    "bad_reward_value": "ops:\n  reward_model:\n    config: {epochs: many}\n",
}

CASES: list[tuple[str, list[str]]] = [
    # demo
    ("demo-parallel-zero", ["demo", "--parallel", "0"]),
    ("demo-parallel-negative", ["demo", "--parallel", "-3"]),
    ("demo-parallel-huge", ["demo", "--parallel", "100000"]),
    ("demo-parallel-float", ["demo", "--parallel", "2.5"]),
    # add-city
    ("add-city-bad-slug", ["add-city", "../etc", "--source", "synthetic", "--path", "{folder}"]),
    ("add-city-unknown-source", ["add-city", "x", "--source", "yelp", "--path", "{folder}"]),
    ("add-city-missing-path", ["add-city", "x", "--source", "gowalla", "--path", "{missing}"]),
    ("add-city-file-for-folder", ["add-city", "x", "--source", "gowalla", "--path", "{file}"]),
    (
        "add-city-folder-for-file",
        ["add-city", "x", "--source", "foursquare-tsmc", "--path", "{folder}"],
    ),
    (
        "add-city-boundaries-file",
        ["add-city", "x", "--source", "synthetic", "--path", "{folder}", "--boundaries", "{file}"],
    ),
    (
        "add-city-boundaries-unknown",
        ["add-city", "x", "--source", "synthetic", "--path", "{folder}", "--boundaries", "mars"],
    ),
    (
        "add-city-bad-encoding",
        ["add-city", "x", "--source", "synthetic", "--path", "{folder}", "--encoding", "ebcdic"],
    ),
    (
        "add-city-empty-name",
        ["add-city", "x", "--source", "synthetic", "--path", "{folder}", "--name", " "],
    ),
    (
        "add-city-long-name",
        ["add-city", "x", "--source", "synthetic", "--path", "{folder}", "--name", "n" * 101],
    ),
    # remove-city
    ("remove-city-bad-slug", ["remove-city", "Tokyo"]),
    ("remove-city-unknown", ["remove-city", "osaka"]),
    # materialize
    ("materialize-parallel-zero", ["materialize", "--parallel", "0"]),
    ("materialize-parallel-negative", ["materialize", "--parallel", "-1"]),
    ("materialize-parallel-huge", ["materialize", "--parallel", "9" * 40]),
    ("materialize-parallel-text", ["materialize", "--parallel", "two"]),
    ("materialize-bad-slug", ["materialize", "--city", "a'b"]),
    ("materialize-unknown-city", ["materialize", "--city", "osaka"]),
    ("materialize-empty-select", ["materialize", "--city", "tiny", "--select", ""]),
    ("materialize-unknown-select", ["materialize", "--city", "tiny", "--select", "no_such"]),
    ("materialize-rate-negative", ["materialize", "--max-quarantine-rate", "-0.1"]),
    ("materialize-rate-above-one", ["materialize", "--max-quarantine-rate", "1.5"]),
    ("materialize-rate-nan", ["materialize", "--max-quarantine-rate", "nan"]),
    ("materialize-rate-text", ["materialize", "--max-quarantine-rate", "lots"]),
    ("materialize-split-not-a-date", ["materialize", "--split-t1", "notadate"]),
    ("materialize-split-bad-month", ["materialize", "--split-t2", "2025-13-01"]),
    ("materialize-split-now", ["materialize", "--split-t1", "now"]),
    ("materialize-split-year", ["materialize", "--split-t1", "0001-01-01"]),
    (
        "materialize-split-order",
        ["materialize", "--split-t1", "2025-03-01", "--split-t2", "2025-02-01"],
    ),
    ("materialize-config-missing", ["materialize", "--config", "{missing}"]),
    ("materialize-config-folder", ["materialize", "--config", "{folder}"]),
    ("materialize-config-unreadable", ["materialize", "--config", "{unreadable}"]),
    ("materialize-config-binary", ["materialize", "--config", "{binary}"]),
    ("materialize-config-huge", ["materialize", "--config", "{huge}"]),
    *[
        (
            f"materialize-config-{name}",
            ["materialize", "--city", "tiny", "--config", "{" + name + "}"],
        )
        for name in CONFIG_TEXTS
    ],
    # retrain
    ("retrain-config-missing", ["retrain", "--config", "{missing}"]),
    ("retrain-config-folder", ["retrain", "--config", "{folder}"]),
    *[
        (f"retrain-config-{name}", ["retrain", "--config", "{" + name + "}"])
        for name in CONFIG_TEXTS
        if name != "bad_op_value"
    ],  # din is not retrained
    ("retrain-config-bad-value", ["retrain", "--config", "{bad_reward_value}"]),
    # report
    ("report-bad-slug", ["report", "--city", "../x"]),
    ("report-unknown-city", ["report", "--city", "osaka"]),
    ("report-no-tables", ["report", "--city", "tiny"]),
    # lookup
    ("lookup-limit-negative", ["lookup", "--city", "tiny", "--code", "1", "--limit", "-5"]),
    ("lookup-limit-zero", ["lookup", "--city", "tiny", "--code", "1", "--limit", "0"]),
    ("lookup-limit-huge", ["lookup", "--city", "tiny", "--code", "1", "--limit", "1001"]),
    ("lookup-limit-giant", ["lookup", "--city", "tiny", "--code", "1", "--limit", "1" * 5000]),
    ("lookup-unknown-tokenizer", ["lookup", "--city", "tiny", "--code", "1", "--tokenizer", "bpe"]),
    ("lookup-bad-slug", ["lookup", "--city", "C", "--code", "1"]),
    ("lookup-unknown-city", ["lookup", "--city", "osaka", "--item", "x"]),
    ("lookup-no-tables", ["lookup", "--city", "tiny", "--item", "x"]),
    ("lookup-bad-code", ["lookup", "--city", "tiny", "--code", "1-x"]),
    ("lookup-long-code", ["lookup", "--city", "tiny", "--code", "-".join(["1"] * 40)]),
    ("lookup-empty-item", ["lookup", "--city", "tiny", "--item", ""]),
    ("lookup-control-item", ["lookup", "--city", "tiny", "--item", "a\nb"]),
    ("lookup-item-and-code", ["lookup", "--city", "tiny", "--item", "x", "--code", "1"]),
    # recommend
    ("recommend-k-zero", ["recommend", "--city", "tiny", "--user", "u", "--k", "0"]),
    ("recommend-k-negative", ["recommend", "--city", "tiny", "--user", "u", "--k", "-10"]),
    ("recommend-k-huge", ["recommend", "--city", "tiny", "--user", "u", "--k", "10000000"]),
    ("recommend-bad-slug", ["recommend", "--city", "a/b", "--user", "u"]),
    ("recommend-unknown-city", ["recommend", "--city", "osaka", "--user", "u"]),
    ("recommend-no-tables", ["recommend", "--city", "tiny", "--user", "u"]),
    ("recommend-empty-user", ["recommend", "--city", "tiny", "--user", ""]),
    # synth
    ("synth-out-file", ["synth", "--out", "{file}"]),
    ("synth-out-under-file", ["synth", "--out", "{under_file}"]),
    ("synth-items-few", ["synth", "--out", "{folder}", "--items", "10"]),
    ("synth-items-huge", ["synth", "--out", "{folder}", "--items", "10000000"]),
    ("synth-seed-negative", ["synth", "--out", "{folder}", "--seed", "-1"]),
    ("synth-seed-huge", ["synth", "--out", "{folder}", "--seed", str(2**64)]),
    ("synth-empty-name", ["synth", "--out", "{folder}", "--name", ""]),
    # no or unknown subcommand
    ("no-command", []),
    ("unknown-command", ["explode"]),
]


@pytest.fixture
def paths(lgsid_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Hostile files and folders, and a registered city ``tiny`` that has no tables."""
    work = tmp_path / "inputs"
    work.mkdir()
    folder = work / "folder"
    folder.mkdir()
    file = work / "plain.txt"
    file.write_text("not a folder\n")
    out: dict[str, str] = {
        "folder": str(folder),
        "file": str(file),
        "missing": str(work / "nope.yaml"),
        "under_file": str(file / "sub"),
    }
    for name, text in CONFIG_TEXTS.items():
        config = work / (f"{name}.json" if name.endswith("_json") else f"{name}.yaml")
        config.write_text(text)
        out[name] = str(config)
    (work / "binary.yaml").write_bytes(b"\xff\xfe\x00ops: \x80\x81")
    out["binary"] = str(work / "binary.yaml")
    (work / "huge.yaml").write_text("#" * (1 << 20) + "\nops: {}\n")
    out["huge"] = str(work / "huge.yaml")
    unreadable = work / "unreadable.yaml"
    unreadable.write_text("ops: {}\n")
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything: fail the read instead
        real = Path.read_bytes

        def read_bytes(self: Path) -> bytes:
            if self == unreadable:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
    out["unreadable"] = str(unreadable)
    CityRegistry(lgsid_env).add(CityConfig("tiny", "synthetic", str(folder)))
    return out


@pytest.fixture(autouse=True)
def no_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly instead of materializing anything if a bad input slipped through."""
    import lgsid_pipeline.runner as runner

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a run was started for bad input")

    monkeypatch.setattr(runner, "materialize", refuse)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str]:
    """(exit code, stderr) of ``main(argv)``, whether it returns or exits."""
    capsys.readouterr()
    try:
        code: int | str | None = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv", [argv for _, argv in CASES], ids=[name for name, _ in CASES])
def test_bad_input_is_one_line_and_exit_code_2(
    argv: list[str], paths: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli([arg.format(**paths) for arg in argv], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], err


def test_unreadable_config_names_the_problem(
    paths: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli(["materialize", "--config", paths["unreadable"]], capsys)
    assert code == 2 and "cannot read run config" in err and "Permission denied" in err


def test_runtime_errors_name_the_cause(
    paths: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        "has no lgsid semantic IDs"
        in run_cli(["lookup", "--city", "tiny", "--item", "x"], capsys)[1]
    )
    assert (
        "has no user_topk_cache"
        in run_cli(["recommend", "--city", "tiny", "--user", "u"], capsys)[1]
    )
    err = run_cli(["materialize", "--city", "tiny", "--config", paths["unknown_op"]], capsys)[1]
    assert "unknown assets under 'ops': no_such_asset" in err
    err = run_cli(["materialize", "--city", "tiny", "--config", paths["bad_resource"]], capsys)[1]
    assert "invalid run config" in err and "no_such_setting" in err
    err = run_cli(["materialize", "--config", paths["bad_json"]], capsys)[1]
    assert "invalid JSON" in err and "line 1" in err


HELP_RANGES: dict[str, list[str]] = {
    "demo": ["1..32"],
    "add-city": [
        "1..64",
        "1..100",
        "synthetic, gowalla, foursquare-tsmc",
        "nyc, tokyo",
        "auto, utf-8, latin-1",
    ],
    "remove-city": ["1..64"],
    "cities": ["print JSON"],  # no option with a range
    "materialize": ["1..64", "1..256", "1..32", "0..1", "1 MiB", "1970..2100"],
    "report": ["1..64"],
    "rollback": ["1..64", "one of: ingest"],
    "retrain": ["1 MiB"],
    "lookup": ["1..64", "1..256", "1..1000", "lgsid, rqkmeans, rqvae"],
    "recommend": ["1..64", "1..256", "1..100"],
    "synth": ["1..100", "0..2147483647", "50..100000"],
}


def test_help_of_every_subcommand_names_the_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == set(HELP_RANGES)
    for command, ranges in HELP_RANGES.items():
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for expected in ranges:
            assert expected in text, (command, expected)


def test_every_subcommand_of_the_parser_has_its_function() -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert list(commands) == list(cli.COMMANDS)


@pytest.mark.parametrize(
    ("option", "lo", "hi", "argv"),
    [
        ("--limit", 1, 1000, ["lookup", "--city", "c", "--code", "1"]),
        ("--k", 1, 100, ["recommend", "--city", "c", "--user", "u"]),
        ("--parallel", 1, 32, ["materialize"]),
        ("--parallel", 1, 32, ["demo"]),
        ("--seed", 0, 2**31 - 1, ["synth", "--out", "."]),
        ("--items", 50, 100_000, ["synth", "--out", "."]),
    ],
)
def test_the_ranges_in_the_help_are_the_ones_enforced(
    option: str, lo: int, hi: int, argv: list[str]
) -> None:
    parser = cli.build_parser()
    for value in (lo, hi):
        assert getattr(parser.parse_args([*argv, option, str(value)]), option.lstrip("-")) == value
    for value in (lo - 1, hi + 1):
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, option, str(value)])


def test_the_cli_options_use_and_show_the_library_defaults() -> None:
    import inspect

    from lgsid_pipeline.catalog import TOKENIZER_KINDS
    from lgsid_pipeline.config import PARALLEL_CITIES  # materialize's default (patched here)
    from lgsid_pipeline.lookup import cached_recommendations, lookup_code
    from lgsid_pipeline.quality import MAX_QUARANTINE_RATE

    commands = next(
        a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices

    def option(command: str, dest: str) -> argparse.Action:
        return next(a for a in commands[command]._actions if a.dest == dest)

    def default_of(function, name: str):
        return inspect.signature(function).parameters[name].default

    assert option("lookup", "tokenizer").choices == TOKENIZER_KINDS
    expected = {
        ("lookup", "tokenizer"): default_of(lookup_code, "tokenizer"),
        ("lookup", "limit"): default_of(lookup_code, "limit"),
        ("recommend", "k"): default_of(cached_recommendations, "k"),
        ("materialize", "parallel"): PARALLEL_CITIES,
        ("demo", "parallel"): PARALLEL_CITIES,
    }
    for (command, dest), value in expected.items():
        assert option(command, dest).default == value, (command, dest)
        assert f"(default {value}" in " ".join(commands[command].format_help().split())
    rate = commands["materialize"].format_help()
    assert f"(default {MAX_QUARANTINE_RATE})" in " ".join(rate.split())


def test_good_values_still_reach_the_run(
    paths: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict = {}
    monkeypatch.setattr(
        cli,
        "_run",
        lambda cities, select, parallel, config: (
            seen.update(cities=cities, parallel=parallel, config=config) or 0
        ),
    )
    run_json = tmp_path / "run.json"
    run_json.write_text('{"ops": {"recommender_datasets": {"config": {"q1": 0.7}}}}')
    assert (
        main(
            [
                "materialize",
                "--city",
                "tiny",
                "--city",
                "tiny",
                "--parallel",
                "32",
                "--config",
                str(run_json),
                "--max-quarantine-rate",
                "0",
                "--split-t1",
                "2025-02-01T00:00:00Z",
                "--split-t2",
                "2025-02-15",
            ]
        )
        == 0
    )
    assert seen["cities"] == ["tiny"] and seen["parallel"] == 32
    assert seen["config"]["ops"]["recommender_datasets"]["config"] == {
        "q1": 0.7,
        "t1": "2025-02-01T00:00:00Z",
        "t2": "2025-02-15",
    }
    assert seen["config"]["resources"]["workspace"]["config"] == {"max_quarantine_rate": 0.0}


@pytest.mark.parametrize(
    "argv",
    [
        ["lookup", "--city", "c", "--code", "1", "--limit", "-5"],
        ["materialize", "--config", "{bad_yaml}"],
        ["materialize", "--parallel", "0"],
        ["materialize", "--split-t1", "notadate"],
    ],
    ids=["limit", "config", "parallel", "split"],
)
def test_the_console_command_prints_no_traceback(
    argv: list[str], paths: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "LGSID_HOME": str(tmp_path / "lgsid_home"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "lgsid_pipeline.cli", *[arg.format(**paths) for arg in argv]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "error:" in done.stderr
    assert done.stdout == ""
