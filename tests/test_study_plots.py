"""Study plots: interactive HTML views and the PNG summary, skipping what cannot be drawn."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest

from lrtune.plots import STUDY_PLOT_FILES, write_study_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CDN_SCRIPT = '<script charset="utf-8" src="https://cdn.plot.ly'


@pytest.fixture(autouse=True)
def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def toy_objective(trial: optuna.Trial) -> float:
    """A conditional space like lrtune's: per-schedule params, learning curves reported per epoch."""
    schedule = trial.suggest_categorical("schedule", ["cosine", "step", "constant"])
    base_lr = trial.suggest_float("base_lr", 1e-3, 1.0, log=True)
    if schedule == "cosine":
        trial.suggest_float("min_lr_ratio", 1e-3, 1e-1, log=True)
    elif schedule == "step":
        trial.suggest_int("decay_steps", 10, 100)
    loss = 1.0
    for epoch in range(1, 5):
        loss = abs(base_lr - 0.1) + 1.0 / epoch
        trial.report(loss, epoch)
        if trial.number == 2 and epoch == 2:
            raise optuna.TrialPruned("below the median")
    return loss


def test_a_toy_study_gets_every_plot(tmp_path: Path) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1), study_name="toy")
    study.optimize(toy_objective, n_trials=8)
    folder = tmp_path / "plots" / "nested"
    paths = write_study_plots(study, folder)
    assert [p.name for p in paths] == list(STUDY_PLOT_FILES.values())
    for path in paths:
        assert path.parent == folder
        assert path.stat().st_size > 1000, path
    for path in paths[:-1]:
        html = path.read_text()
        assert CDN_SCRIPT in html and "Plotly.newPlot" in html
    assert paths[-1].read_bytes().startswith(PNG_MAGIC)
    assert "base_lr" in (folder / "param_importances.html").read_text()


def test_embedded_plotlyjs_is_self_contained(tmp_path: Path) -> None:
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", -1.0, 1.0) ** 2, n_trials=2)
    paths = write_study_plots(study, tmp_path, embed_plotlyjs=True)
    history = tmp_path / "optimization_history.html"
    assert history in paths
    html = history.read_text()
    assert CDN_SCRIPT not in html and len(html) > 1_000_000


def test_one_trial_skips_impossible_plots_with_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = optuna.create_study(study_name="single")
    study.optimize(lambda t: t.suggest_float("x", -1.0, 1.0) ** 2, n_trials=1)
    with caplog.at_level(logging.WARNING, logger="lrtune"):
        paths = write_study_plots(study, tmp_path)
    assert sorted(p.name for p in paths) == [
        "optimization_history.html",
        "parallel_coordinate.html",
        "study_summary.png",
    ]
    assert not (tmp_path / "param_importances.html").exists()
    assert not (tmp_path / "intermediate_values.html").exists()
    skipped = [r.getMessage() for r in caplog.records if r.name.startswith("lrtune")]
    assert any("param importances" in m and "needs 3 complete trials" in m for m in skipped)
    assert any("intermediate values" in m for m in skipped)


def test_equal_importance_fallback_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    study = optuna.create_study()
    study.optimize(lambda t: (t.suggest_float("x", 0.0, 1.0), 1.0)[1], n_trials=4)  # constant objective
    with caplog.at_level(logging.WARNING, logger="lrtune"):
        paths = write_study_plots(study, tmp_path)
    assert "param_importances.html" not in {p.name for p in paths}
    assert any("param importances" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("case", ["empty", "all_failed", "multi_objective"])
def test_studies_that_cannot_be_drawn_never_raise(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if case == "multi_objective":
        study = optuna.create_study(directions=["minimize", "minimize"])
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=3)
    else:
        study = optuna.create_study()
        if case == "all_failed":

            def fail(trial: optuna.Trial) -> float:
                trial.suggest_float("x", 0, 1)
                raise RuntimeError("boom")

            study.optimize(fail, n_trials=2, catch=(RuntimeError,))
    with caplog.at_level(logging.WARNING, logger="lrtune"):
        paths = write_study_plots(study, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)
    if case != "multi_objective":
        assert paths == []
    assert len([r for r in caplog.records if r.name.startswith("lrtune")]) == 5 - len(paths)
