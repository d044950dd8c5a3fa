"""The report store owns LGSID_HOME/reports: one layout, whole-file writes, safe names."""

from pathlib import Path

import pytest

from lgsid_pipeline.config import InvalidCityError
from lgsid_pipeline.reports import GLOBAL, ReportStore


def test_layout_under_the_home(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    root = tmp_path / "reports"
    assert store.city_summary("ny") == root / "ny.json"
    assert store.alignment("ny") == root / "alignment" / "ny.json"
    assert store.global_model("reward_model") == root / "global" / "reward_model.json"
    assert store.tokenizer("lgsid") == root / "tokenizers" / "lgsid.json"
    assert store.tokenizer_codes("ny", "lgsid") == root / "tokenizers" / "ny" / "lgsid.json"
    assert store.recommender("ny", "din") == root / "recommenders" / "ny" / "din.json"
    assert (
        store.plot("ny", "items_map")
        == store.plot("ny", "items_map.png")
        == root / "plots" / "ny" / "items_map.png"
    )
    assert store.plot(GLOBAL, "gdpo_training").parent == root / "plots" / "global"


@pytest.mark.parametrize("city", ["../etc", "A B", ""])
def test_city_names_cannot_leave_the_store(tmp_path: Path, city: str) -> None:
    store = ReportStore(tmp_path)
    for path_of in (
        store.city_summary,
        store.alignment,
        lambda c: store.plot(c, "x"),
        lambda c: store.recommender(c, "din"),
    ):
        with pytest.raises(InvalidCityError):
            path_of(city)


def test_reads_and_writes(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    path = store.recommender("ny", "din")
    assert store.read(path) is None
    store.write(path, {"auc": 0.7})
    assert store.read(path) == {"auc": 0.7}
    png = store.write_png(store.plot("ny", "map"), b"\x89PNG")
    assert png.read_bytes() == b"\x89PNG"
    store.write(store.tokenizer_codes("ny", "rqvae"), {"n": 1})
    store.write(store.tokenizer_codes("ny", "lgsid"), {"n": 2})
    assert store.tokenizer_codes_reports("ny") == {"lgsid": {"n": 2}, "rqvae": {"n": 1}}
    assert store.tokenizer_codes_reports("tokyo") == {}
    assert not list(tmp_path.rglob("*.tmp*"))  # written whole, no leftovers


def test_demo_summary_gives_the_served_lists_hit_at_10() -> None:
    from lgsid_pipeline.demo.summary import served_lines

    floors = {"popularity_2km": {"hit@10": 0.1}, "user_history_2km": {"hit@10": 0.295}}
    floor = {"gate": {"serve": "floor", "reason": "candidate does not beat floor (b)"}}
    assert served_lines(floor, floors) == [
        "  served: floor (b), test Hit@10 0.295 (floors: popularity_2km 0.100, "
        "user_history_2km 0.295)",
        "  gate: candidate does not beat floor (b)",
    ]
    model = {
        "gate": {"serve": "candidate", "reason": "beats floor (b)"},
        "served_variant": "lgsid",
        "variants": {"lgsid": {"blended": {"hit@10": 0.31}}},
    }
    assert served_lines(model, floors)[0].startswith(
        "  served: tiger/lgsid + history, test Hit@10 0.310"
    )
