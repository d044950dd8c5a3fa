"""Metrics added to a registered model's run land on that run, in one batch, NaN left out."""

from pathlib import Path

import pytest

from lgsid_pipeline.registry import log_run_metrics, metric_name, register_folder


@pytest.mark.slow
def test_log_run_metrics_adds_to_the_champions_run(tmp_path: Path) -> None:
    import mlflow

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.txt").write_text("w")
    home = tmp_path / "home"
    registered = register_folder("tiny-model", folder, {}, {"fit": 1.0}, None, home=home)
    run_id = log_run_metrics(
        "tiny-model",
        {"new-york.hit@10": 0.5, "tokyo.utilisation": 0.25, "nan": float("nan")},
        home=home,
    )
    assert run_id == registered.run_id
    metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    assert metrics[metric_name("new-york.hit@10")] == 0.5
    assert metrics[metric_name("tokyo.utilisation")] == 0.25
    assert metric_name("nan") not in metrics and metrics["fit"] == 1.0
    with pytest.raises(Exception, match="no registered model"):
        log_run_metrics("missing-model", {"a": 1.0}, home=home)
