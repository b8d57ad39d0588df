"""MLflow bookkeeping: secret masking, artifact locations, and a finder run read back."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from lrtune.errors import UsageError
from lrtune.tracking import (
    TrackingSettings,
    artifact_root,
    log_finder_run,
    mask_secrets,
    sqlite_path,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://bob:hunter2@db:5432/optuna", "postgresql://bob:***@db:5432/optuna"),
        ("postgresql+psycopg2://u:p%40ss@h/db", "postgresql+psycopg2://u:***@h/db"),
        ("mysql://u:p@h/db?password=x&charset=utf8", "mysql://u:***@h/db?password=***&charset=utf8"),
        ("sqlite:///lrtune.db", "sqlite:///lrtune.db"),
        ("http://host:5000", "http://host:5000"),
        ("see https://tok:abc@example.org/x and more", "see https://tok:***@example.org/x and more"),
    ],
)
def test_mask_secrets(text: str, expected: str) -> None:
    assert mask_secrets(text) == expected
    assert "hunter2" not in mask_secrets(text)


def test_artifact_root_sits_beside_the_sqlite_database(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/sub/mlflow.db"
    assert sqlite_path(uri) == tmp_path / "sub" / "mlflow.db"
    assert artifact_root(uri) == (tmp_path / "sub" / "mlartifacts").as_uri()
    assert artifact_root("sqlite:///mlflow.db") == (Path.cwd() / "mlartifacts").as_uri()
    assert artifact_root("http://localhost:5000") is None


@pytest.mark.parametrize(
    "uri",
    ["mlflow.db", "file:///tmp/mlruns", "sqlite:////nonexistent-folder-xyz/mlflow.db"],
)
def test_bad_tracking_uris_are_usage_errors(uri: str) -> None:
    with pytest.raises(UsageError):
        TrackingSettings(tracking_uri=uri)


def test_empty_experiment_name_is_rejected() -> None:
    with pytest.raises(UsageError, match="experiment"):
        TrackingSettings(experiment="  ")


def test_finder_run_is_logged_and_read_back(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    settings = TrackingSettings(tracking_uri=uri, experiment="exp-a")
    result = SimpleNamespace(
        lrs=[1e-4, 1e-3, 1e-2, 1e-1],
        losses=[2.0, 1.5, float("nan"), 3.0],
        suggested_lr=1e-3,
        lr_low=1e-4,
        lr_high=1e-2,
        spread_decades=None,
        flags=["no_divergence"],
        confidence="medium",
    )
    artifact = tmp_path / "finder.json"
    artifact.write_text("{}")
    run_id = log_finder_run(
        settings,
        result=result,
        params={"task": "digits", "storage": "postgresql://u:secret@h/db"},
        files=[artifact],
    )
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["task"] == "digits"
    assert "secret" not in run.data.params["storage"]
    assert run.data.metrics["suggested_lr"] == pytest.approx(1e-3)
    assert run.data.tags["lrtune.flags"] == "no_divergence"
    losses = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in losses] == [(0, 2.0), (1, 1.5), (3, 3.0)]  # NaN point skipped
    assert len(client.get_metric_history(run_id, "lr")) == 4
    assert [f.path for f in client.list_artifacts(run_id)] == ["finder.json"]
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())

    # a second run reuses the experiment
    second = log_finder_run(settings, result=result, params={}, files=[])
    assert client.get_run(second).info.experiment_id == run.info.experiment_id
