"""Matplotlib figures: the finder curve, the schedule catalogue, study summaries.

Every function writes files (PNG, and HTML for the interactive study plots); matplotlib
and plotly are imported inside the functions and draw on their own Agg canvas, so
importing this module is cheap, needs no display, and never changes the backend of a
user's notebook.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lrtune.errors import one_line

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import optuna

    from lrtune.finder import FinderResult


def plot_finder(result: FinderResult, path: str | os.PathLike[str]) -> None:
    """Draw a range test: loss against learning rate (log axis), the suggestion and the useful region.

    The smoothed (median) curve is bold, every repeat's raw curve faint; a vertical line marks
    ``suggested_lr`` and a band ``lr_low``..``lr_high``. The y axis is clipped above the level the curve had
    before its minimum, so the blow-up tail does not squash the useful region. Flags and confidence go in the
    title. Drawn on a standalone Agg-rendered :class:`~matplotlib.figure.Figure`, so the caller's pyplot
    backend (a notebook's, say) is left alone.

    Args:
        result: a :class:`lrtune.finder.FinderResult`.
        path: the PNG to write (parent folders are created).
    """
    import math
    from pathlib import Path

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lrs = np.asarray(result.lrs, dtype=float)
    losses = np.asarray(result.losses, dtype=float)
    source = "validation" if result.loss_source == "val" else "training"
    fig = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    curve_lrs = np.asarray(result.curve_lrs, dtype=float)
    for r, raw in enumerate(result.curves):
        y = np.asarray(raw, dtype=float)
        label = "raw loss per repeat" if r == 0 else None
        ax.plot(curve_lrs[: len(y)], y, color="tab:blue", alpha=0.25, linewidth=0.8, label=label)
    ok = np.isfinite(lrs) & np.isfinite(losses)
    ax.plot(lrs[ok], losses[ok], color="tab:blue", linewidth=2.2, label=f"smoothed {source} loss")
    if result.train_lrs is not None and result.train_losses is not None:
        tx = np.asarray(result.train_lrs, dtype=float)
        ty = np.asarray(result.train_losses, dtype=float)
        good = np.isfinite(ty)
        ax.plot(tx[good], ty[good], color="tab:gray", linewidth=1.2, linestyle="--", label="training loss")
    if all(math.isfinite(v) and v > 0 for v in (result.lr_low, result.lr_high)):
        ax.axvspan(result.lr_low, result.lr_high, color="tab:green", alpha=0.15, label="lr_low … lr_high")
    if math.isfinite(result.suggested_lr) and result.suggested_lr > 0:
        ax.axvline(
            result.suggested_lr,
            color="tab:red",
            linewidth=1.5,
            label=f"suggested {result.suggested_lr:.3g}",
        )
    ax.set_xscale("log")
    y = losses[ok]
    if len(y):
        i_min = int(np.argmin(y))
        low, high = float(np.min(y)), float(np.max(y[: i_min + 1]))
        margin = max(0.15 * (high - low), 1e-3 * max(abs(low), abs(high)), 1e-12)
        ax.set_ylim(low - margin, high + 2 * margin)
    ax.set_xlabel("learning rate (group 0)")
    ax.set_ylabel(f"{source} loss")
    title = f"LR range test: suggested {result.suggested_lr:.3g}, confidence {result.confidence or 'n/a'}"
    if result.spread_decades is not None:
        title += f", spread {result.spread_decades:.2f} decades"
    ax.set_title(title, fontsize=10)
    notes = [f"flags: {', '.join(result.flags) or 'none'}", f"repeats: {result.repeats}"]
    notes.append("diverged" if result.diverged else "did not diverge")
    box = {"boxstyle": "round", "facecolor": "white", "alpha": 0.8}
    ax.text(0.02, 0.03, "\n".join(notes), transform=ax.transAxes, fontsize=8, va="bottom", bbox=box)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format="png")


# -- study plots ---------------------------------------------------------------------------------------

STUDY_PLOT_FILES = {
    "optimization_history": "optimization_history.html",
    "param_importances": "param_importances.html",
    "parallel_coordinate": "parallel_coordinate.html",
    "intermediate_values": "intermediate_values.html",
    "summary": "study_summary.png",
}
"""The files :func:`write_study_plots` may write, by plot."""

_MIN_TRIALS_FOR_IMPORTANCE = 3


def write_study_plots(study: optuna.Study, folder: Path, *, embed_plotlyjs: bool = False) -> list[Path]:
    """Draw a study: interactive HTML views (Optuna's plotly figures) and one static PNG summary.

    Writes the optimization history, parameter importances, parallel coordinates and
    intermediate values (the learning curves of every trial) as HTML, and
    ``study_summary.png`` (best-so-far curve and validation curves coloured by schedule).
    A plot that cannot be drawn (too few complete trials, no intermediate values, a
    multi-objective study) is skipped with a logged warning, never an exception.

    Args:
        study: the study to draw.
        folder: where the files go (created if missing).
        embed_plotlyjs: embed plotly.js in each HTML file (~4 MB each, viewable offline)
            instead of loading it from a CDN.

    Returns:
        The files written, in the order of :data:`STUDY_PLOT_FILES`.

    Example:
        >>> import optuna, pathlib, tempfile
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=5)
        >>> paths = write_study_plots(study, pathlib.Path(tempfile.mkdtemp()))
        >>> sorted(p.name for p in paths)[:2]
        ['optimization_history.html', 'parallel_coordinate.html']
    """
    import logging

    import optuna

    log = logging.getLogger(__name__)
    folder.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    with_params = [t for t in complete if t.params]
    curves = [t for t in trials if t.intermediate_values]
    viz = optuna.visualization
    reasons: dict[str, str | None] = {
        "optimization_history": None if complete else "no complete trials",
        "param_importances": (
            None
            if len(with_params) >= _MIN_TRIALS_FOR_IMPORTANCE
            else f"needs {_MIN_TRIALS_FOR_IMPORTANCE} complete trials with params, has {len(with_params)}"
        ),
        "parallel_coordinate": None if with_params else "no complete trials with params",
        "intermediate_values": None if curves else "no trial reported intermediate values",
        "summary": None if complete or curves else "no complete trials and no intermediate values",
    }
    drawers = {
        "optimization_history": viz.plot_optimization_history,
        "param_importances": _importance_figure,
        "parallel_coordinate": viz.plot_parallel_coordinate,
        "intermediate_values": viz.plot_intermediate_values,
    }
    written: list[Path] = []
    for name, filename in STUDY_PLOT_FILES.items():
        path = folder / filename
        reason = reasons[name]
        if reason is None:
            try:
                if name == "summary":
                    _plot_study_summary(study, path)
                else:
                    figure = drawers[name](study)
                    if not figure.data:
                        raise ValueError("Optuna drew an empty figure")
                    figure.write_html(path, include_plotlyjs=True if embed_plotlyjs else "cdn")
            except Exception as exc:  # a plot is a nice-to-have: never fail a study for it
                reason = f"{type(exc).__name__}: {one_line(exc)}"
        if reason is None:
            written.append(path)
        else:
            log.warning(
                "study %r: skipped the %s plot (%s)", study.study_name, name.replace("_", " "), reason
            )
    return written


def _importance_figure(study: optuna.Study) -> Any:
    """Optuna's importance plot, refusing the 'all importances equal' fallback of too few trials."""
    import warnings

    import optuna

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = optuna.visualization.plot_param_importances(study)
    for warning in caught:
        if "will be equal" in str(warning.message):
            raise ValueError(str(warning.message).split(". ")[0])
    return figure


def _plot_study_summary(study: optuna.Study, path: Path) -> None:
    """Best-so-far objective by trial, and every trial's intermediate values coloured by schedule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from matplotlib.ticker import MaxNLocator

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    curves = [t for t in trials if t.intermediate_values]
    key = _schedule_param(trials)
    groups = sorted({str(t.params.get(key, "?")) for t in trials}) if key else ["trials"]
    cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    colour = {g: cmap(i % cmap.N) for i, g in enumerate(groups)}

    def group(trial: optuna.trial.FrozenTrial) -> str:
        return str(trial.params.get(key, "?")) if key else "trials"

    panels = 2 if curves and complete else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 4.2), squeeze=False)
    try:
        ax_iter = iter(axes[0])
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        if complete:
            ax = next(ax_iter)
            numbers = [t.number for t in complete]
            values = [float(t.value) for t in complete if t.value is not None]
            best: list[float] = []
            for v in values:
                best.append(v if not best else (max if maximize else min)(best[-1], v))
            for name in groups:
                xs = [t.number for t in complete if group(t) == name]
                ys = [float(t.value) for t in complete if group(t) == name and t.value is not None]
                if xs:
                    ax.scatter(xs, ys, s=18, color=colour[name], label=name, zorder=3)
            ax.step(numbers, best, where="post", color="black", linewidth=1.5, label="best so far")
            ax.set_xlabel("trial")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("objective")
            ax.set_title(f"{study.study_name}: {'max' if maximize else 'min'}imize")
            ax.legend(fontsize="small")
            ax.grid(alpha=0.3)
        if curves:
            ax = next(ax_iter)
            shown: set[str] = set()
            for t in sorted(curves, key=group):
                steps = sorted(t.intermediate_values)
                pruned = t.state == optuna.trial.TrialState.PRUNED
                name = group(t)
                ax.plot(
                    steps,
                    [t.intermediate_values[s] for s in steps],
                    color=colour[name],
                    linestyle="--" if pruned else "-",
                    alpha=0.6 if pruned else 0.9,
                    linewidth=1.0,
                    label=None if name in shown else name,
                )
                shown.add(name)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("reported value")
            ax.set_title("learning curves (dashed: pruned)")
            ax.legend(fontsize="small")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def _schedule_param(trials: Sequence[optuna.trial.FrozenTrial]) -> str | None:
    """The categorical param naming the schedule type ("schedule", "schedule_type", ...), if any."""
    names = sorted({k for t in trials for k, v in t.params.items() if "schedule" in k and isinstance(v, str)})
    return names[0] if names else None


if TYPE_CHECKING:
    from collections.abc import Mapping

    from lrtune.schedules import ScheduleSpec


def plot_schedules(
    specs: Mapping[str, ScheduleSpec | Mapping[str, Any]], total_steps: int, path: str | os.PathLike[str]
) -> None:
    """Draw every schedule in ``specs`` over one budget of ``total_steps`` optimizer steps.

    One small panel per schedule, titled by its name; a log LR axis where the LR spans more than
    a decade and a half, a dotted line at the end of warmup, and momentum (dashed, right axis)
    where the schedule cycles it. ``plateau`` is drawn before any cut.

    Example:
        >>> import tempfile, pathlib
        >>> from lrtune.schedules import examples
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "schedules.png"
        >>> plot_schedules(examples(1000), 1000, out)
        >>> out.stat().st_size > 0
        True
    """
    import math
    from pathlib import Path

    import matplotlib
    import numpy as np

    from lrtune.errors import UsageError
    from lrtune.schedules import check_total_steps, parse_spec

    total = check_total_steps(total_steps)
    parsed = {str(name): parse_spec(spec) for name, spec in specs.items()}
    if not parsed:
        raise UsageError("plot_schedules needs at least one schedule")
    steps = np.unique(np.linspace(0, total, num=min(total + 1, 2001)).round().astype(int))
    curves = {name: np.array([spec.lr(int(k), total) for k in steps]) for name, spec in parsed.items()}
    momenta = {name: [spec.momentum(int(k), total) for k in steps] for name, spec in parsed.items()}

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, len(parsed))
    nrows = math.ceil(len(parsed) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 2.9 * nrows), squeeze=False)
    try:
        for index, (ax, (name, spec)) in enumerate(zip(axes.flat, parsed.items(), strict=False)):
            lrs = curves[name]
            ax.plot(steps, lrs, drawstyle="steps-post", color="C0", linewidth=1.5)
            if lrs.max() / lrs.min() > 30.0:
                ax.set_yscale("log")
            title = name if name == spec.type_name else f"{name} ({spec.type_name})"
            if spec.steps_on_metric:
                title += ", before cuts"
            ax.set_title(title, fontsize=10)
            if spec.warmup_steps:
                ax.axvline(spec.warmup_steps, color="0.55", linestyle=":", linewidth=1.0)
            momentum = momenta[name]
            if momentum[0] is not None:
                twin = ax.twinx()
                twin.plot(steps, momentum, color="C1", linestyle="--", linewidth=1.0)
                twin.set_ylabel("momentum", color="C1", fontsize=8)
                twin.tick_params(axis="y", labelsize=7, colors="C1")
            ax.grid(alpha=0.3, which="both")
            ax.tick_params(labelsize=7)
            if index % ncols == 0:
                ax.set_ylabel("learning rate", fontsize=8)
            if index >= len(parsed) - ncols:
                ax.set_xlabel("optimizer step", fontsize=8)
        for ax in axes.flat[len(parsed) :]:
            ax.set_visible(False)
        fig.suptitle(f"Learning-rate schedules over {total} steps", fontsize=11)
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
