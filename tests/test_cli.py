"""The lgsid command: registration, clear errors and exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lgsid_pipeline.cli import main
from lgsid_pipeline.config import PARALLEL_CITIES


@pytest.mark.parametrize("slug", ["../etc", "a'b", "Tokyo", "a/b", "x" * 65])
def test_add_city_rejects_unsafe_keys(
    lgsid_env: Path, shared_data: Path, slug: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["add-city", slug, "--source", "gowalla", "--path", str(shared_data / "gowalla_nyc")]
    )
    assert code == 2
    assert "invalid city key" in capsys.readouterr().err
    assert not (lgsid_env / "cities.json").exists()


def test_add_city_unknown_source_exits_2(lgsid_env: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["add-city", "x", "--source", "yelp", "--path", "."])
    assert exc.value.code == 2


def test_add_city_missing_or_wrong_path(
    lgsid_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["add-city", "x", "--source", "gowalla", "--path", str(tmp_path / "no")]) == 2
    assert "source path not found" in capsys.readouterr().err
    assert main(["add-city", "x", "--source", "foursquare-tsmc", "--path", str(tmp_path)]) == 2
    assert "expects a TSMC2014 .txt file" in capsys.readouterr().err


def test_registration_persists_and_unknown_cities_are_named(
    lgsid_env: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tky = shared_data / "foursquare_tky" / "dataset_TSMC2014_TKY_valtest.txt"
    assert main(["add-city", "tokyo", "--source", "foursquare-tsmc", "--path", str(tky)]) == 0
    capsys.readouterr()
    assert main(["cities", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(c["slug"], c["source"], c["path"]) for c in listed] == [
        ("tokyo", "foursquare-tsmc", str(tky.resolve()))
    ]
    assert main(["report", "--city", "osaka", "--json"]) == 2
    assert "unknown city 'osaka' (registered: tokyo)" in capsys.readouterr().err
    assert main(["materialize", "--city", "osaka"]) == 2
    assert main(["report", "--city", "tokyo"]) == 2
    assert "no materialized items yet" in capsys.readouterr().err
    assert main(["materialize", "--city", "tokyo", "--select", "no_such_asset"]) == 2
    assert "invalid asset selection" in capsys.readouterr().err


def test_materialize_split_options_reach_the_dataset_config(
    lgsid_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lgsid_pipeline.cli as cli
    from lgsid_pipeline.cities import CityConfig, CityRegistry

    CityRegistry(lgsid_env).add(CityConfig("tiny", "synthetic", str(tmp_path)))
    seen: dict = {}
    monkeypatch.setattr(
        cli, "_run", lambda cities, select, parallel, config: seen.update(config=config) or 0
    )
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("ops:\n  recommender_datasets:\n    config:\n      q1: 0.7\n")
    assert (
        main(
            [
                "materialize",
                "--config",
                str(run_yaml),
                "--split-t1",
                "2025-02-01",
                "--split-t2",
                "2025-02-15T12:00:00",
            ]
        )
        == 0
    )
    assert seen["config"]["ops"]["recommender_datasets"]["config"] == {
        "q1": 0.7,
        "t1": "2025-02-01",
        "t2": "2025-02-15T12:00:00",
    }
    assert "ingest_tables" not in seen["config"]["ops"]
    assert main(["materialize", "--full-ingest"]) == 0
    assert seen["config"]["ops"]["ingest_tables"]["config"] == {"full": True}


def test_demo_full_trains_with_the_asset_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    import lgsid_pipeline.demo.run as demo_run

    seen: list[tuple[int, bool]] = []
    monkeypatch.setattr(
        demo_run, "run_demo", lambda parallel, full=False: seen.append((parallel, full)) or 0
    )
    assert main(["demo"]) == 0 and main(["demo", "--full", "--parallel", "1"]) == 0
    assert seen == [(PARALLEL_CITIES, False), (1, True)]


def test_demo_output_of_its_runs_goes_to_the_log_not_the_console(tmp_path: Path) -> None:
    import subprocess
    import sys

    from lgsid_pipeline.demo.run import stderr_into

    log = tmp_path / "logs" / "demo.log"
    with stderr_into(log):
        print("from this process", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('from a child\\n')"])
    text = log.read_text()
    assert "from this process" in text and "from a child" in text
    assert os.fstat(2).st_ino != log.stat().st_ino  # standard error is restored
