"""The ``lrtune`` command line: find, study, best, schedules, ui.

Thin by design: each command parses its options into a settings object, calls the
library, and prints. Errors become exit codes in one place (:class:`LrtuneGroup`):
a usage error prints one line ``Error: ...`` and exits 2, an ``LrtuneError`` exits with
its own code, Ctrl-C exits 130; no traceback unless ``LRTUNE_DEBUG=1``.

Only click and lrtune's torch-free modules are imported at the top, so
``lrtune --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from lrtune.config import OPTIMIZER_CHOICES, PRUNERS, SAMPLERS
from lrtune.errors import LrtuneError, one_line
from lrtune.optimizers import OPTIMIZER_NAMES
from lrtune.space import SEARCHABLE_TYPES
from lrtune.tracking import DEFAULT_TRACKING_URI, mask_secrets

logger = logging.getLogger("lrtune")

DEVICES = ("auto", "cpu", "cuda", "mps")
SAMPLER_NAMES = tuple(SAMPLERS)
PRUNER_NAMES = tuple(PRUNERS)
SCHEDULE_TYPES = SEARCHABLE_TYPES


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


class LrtuneGroup(click.Group):
    """A click group that turns every error into one line on stderr and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        debug = os.environ.get("LRTUNE_DEBUG") == "1"
        try:
            result = super().main(args, prog_name or "lrtune", complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            _fail("aborted", 130)
        except click.ClickException as exc:
            _fail(exc.format_message().replace("\n", " "), exc.exit_code)
        except LrtuneError as exc:
            if debug:
                raise
            _fail(mask_secrets(str(exc).replace("\n", " ")), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:
            if debug:
                raise
            message = mask_secrets(one_line(exc))
            _fail(f"unexpected {type(exc).__name__}: {message} (set LRTUNE_DEBUG=1 for the traceback)", 1)
        if isinstance(result, int) and result != 0:
            sys.exit(result)
        sys.exit(0)


@click.group(cls=LrtuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lrtune")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Find a learning rate you can trust, then tune its schedule with Optuna and MLflow."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if verbose == 0:
        # lrtune reports failures itself, in one line; MLflow's own error logs carry tracebacks.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "CRITICAL")
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logger.setLevel(level)


def _tracking_options(default_experiment: str | None) -> Any:
    def decorate(func: Any) -> Any:
        func = click.option(
            "--experiment",
            default=default_experiment,
            show_default=default_experiment is not None,
            help="MLflow experiment name.",
        )(func)
        func = click.option(
            "--tracking-uri",
            default=DEFAULT_TRACKING_URI,
            show_default=True,
            help="MLflow tracking URI (artifacts of sqlite:///DIR/mlflow.db go to DIR/mlartifacts).",
        )(func)
        return func

    return decorate


@cli.command()
@click.option(
    "--task", default="digits", show_default=True, help="Built-in task, imagefolder:PATH or module:function."
)
@click.option("--optimizer", type=click.Choice(OPTIMIZER_NAMES), default="sgd", show_default=True)
@click.option("--start-lr", type=float, default=1e-7, show_default=True)
@click.option("--end-lr", type=float, default=10.0, show_default=True)
@click.option("--num-iter", type=int, default=200, show_default=True, help="Optimizer updates per sweep.")
@click.option("--step-mode", type=click.Choice(["exp", "linear"]), default="exp", show_default=True)
@click.option(
    "--repeats",
    type=int,
    default=3,
    show_default=True,
    help="Reseeded sweeps; their spread is the confidence.",
)
@click.option("--batch-size", type=int, default=None, help="Default: the task's batch size.")
@click.option(
    "--accumulation-steps", type=int, default=1, show_default=True, help="Micro-batches per update."
)
@click.option(
    "--validation", is_flag=True, help="Suggest from a fixed held-out subset's loss, not the training loss."
)
@click.option("--amp", is_flag=True, help="Mixed precision on CUDA (bf16, or fp16 with a grad scaler).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("lrtune-find"), show_default=True)
@_tracking_options("lrtune-find")
@click.option("--no-mlflow", is_flag=True, help="Do not log the run to MLflow.")
@click.option(
    "--param-group",
    "param_groups",
    multiple=True,
    metavar="NAME=REGEX@FACTOR",
    help="A part of the model (parameter names matching REGEX; first match wins) at FACTOR × the LR; "
    "repeatable. The rest trains at factor 1; the sweep moves all groups together.",
)
def find(**options: Any) -> None:
    """Run a learning-rate range test and propose a rate with the bounds of the useful region."""
    from lrtune.find_job import FindSettings, run_find
    from lrtune.parts import GroupSpec
    from lrtune.tracking import TrackingSettings

    options["param_groups"] = tuple(GroupSpec.parse(text) for text in options["param_groups"])

    tracking = (
        None
        if options.pop("no_mlflow")
        else TrackingSettings(tracking_uri=options.pop("tracking_uri"), experiment=options.pop("experiment"))
    )
    options.pop("tracking_uri", None)
    options.pop("experiment", None)
    settings = FindSettings(**options, tracking=tracking)

    from tqdm import tqdm

    with tqdm(
        total=settings.num_iter * settings.repeats,
        desc=f"range test ({settings.task})",
        unit="step",
        disable=not sys.stderr.isatty(),
        file=sys.stderr,
        leave=False,
    ) as bar:
        outcome = run_find(settings, progress=bar.update)
    _print_find_summary(outcome, settings)


def _print_find_summary(outcome: Any, settings: Any) -> None:
    result = outcome.result
    spread = "n/a (one sweep)" if result.spread_decades is None else f"{result.spread_decades:.2f} decades"
    rows = [
        ("suggested_lr", f"{result.suggested_lr:.3g}"),
        ("lr_low", f"{result.lr_low:.3g}"),
        ("lr_high", f"{result.lr_high:.3g}"),
        ("spread", spread),
        ("confidence", str(getattr(result, "confidence", "n/a"))),
        ("flags", ", ".join(result.flags) or "none"),
        ("diverged", "yes" if result.diverged else "no"),
        ("files", f"{outcome.json_path}, {outcome.plot_path}"),
    ]
    if outcome.run_id:
        rows.append(
            ("mlflow run", f"{outcome.run_id} ({mask_secrets(settings.tracking.tracking_uri)}; lrtune ui)")
        )
    click.echo(
        f"lrtune find: {outcome.task_name}, {settings.optimizer}, {settings.repeats}×{settings.num_iter} steps"
    )
    for key, value in rows:
        click.echo(f"  {key:<13} {value}")


@cli.command()
@_tracking_options(None)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 exposes it)."
)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
def ui(tracking_uri: str, experiment: str | None, host: str, port: int) -> None:
    """Open the MLflow UI on lrtune's store."""
    from lrtune.tracking import TrackingSettings, artifact_root

    TrackingSettings(tracking_uri=tracking_uri)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", host]
    command += ["--port", str(port)]
    root = artifact_root(tracking_uri)
    if root is not None:
        command += ["--artifacts-destination", root]
    click.echo(
        f"MLflow UI for {mask_secrets(tracking_uri)} at {_ui_url(tracking_uri, experiment, host, port)} "
        "(Ctrl-C stops it)",
        err=True,
    )
    raise SystemExit(_run_group(command))


def _ui_url(tracking_uri: str, experiment: str | None, host: str, port: int) -> str:
    """The UI's address, on the runs of ``experiment`` when it exists, in the "Model training" view.

    MLflow 3's UI opens experiments in its GenAI view unless the address (or the user's last
    choice, kept by the browser) asks for ``workflowType=machine_learning``.
    """
    page = "experiments"
    if experiment is not None:
        from lrtune.tracking import TrackingSettings, open_client

        found = open_client(TrackingSettings(tracking_uri=tracking_uri)).get_experiment_by_name(experiment)
        if found is None:
            raise click.UsageError(f"no MLflow experiment {experiment!r} in {mask_secrets(tracking_uri)}")
        page = f"experiments/{found.experiment_id}/runs"
    return f"http://{host}:{port}/#/{page}?workflowType=machine_learning"


def _run_group(command: list[str]) -> int:
    """Run ``command`` in its own process group; SIGINT, SIGTERM and SIGHUP stop the whole group.

    ``mlflow ui`` starts a web server and job consumers of its own: a signal to lrtune alone
    would leave them running and holding the port. Returns the command's exit code (128 + the
    signal's number when a signal stopped lrtune).
    """
    import signal
    import subprocess
    import time

    process = subprocess.Popen(command, start_new_session=True)
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    code = process.wait()
    start = time.monotonic()
    while time.monotonic() - start < 12:  # the group outlives its leader: wait, then kill what is left
        try:
            os.killpg(process.pid, signal.SIGTERM if time.monotonic() - start < 10 else signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    return 128 + received[0] if received else code


# ------------------------------------------------------------------------------------------- study
def _study_default(name: str) -> str:
    from lrtune.config import StudyConfig

    value = getattr(StudyConfig, name)
    if isinstance(value, tuple):
        return ",".join(value) if len(value) <= 4 else "every searchable type"
    return str(value)


def _from_file(name: str, text: str) -> str:
    return f"{text} [default: {_study_default(name)}, or the study file's]"


_STUDY_HELP = """Run (or resume) an Optuna study over learning-rate schedules; every trial is logged to MLflow.

STUDY_FILE is an optional YAML file of settings (see studies/); flags override it. With --bounds
auto a range test runs first and its bounds become the search space. --n-trials is the study's
total: re-running a command resumes the study and adds only the missing trials (complete and
pruned trials count; failed ones are run again).

Trial 0 is the strong default: a cosine from the range test's suggested LR, no warmup. The
pruner judges no trial before one epoch past the longest warmup the space can draw: pruning
earlier punishes warmup, one-cycle and late-annealing schedules (short-horizon bias, Wu et al.
2018); racing trains every trial's whole schedule and sends the best third to more seeds. A
trial whose loss diverges is pruned with the reason; the study goes on.

Before a winner is named, the --confirm best trials and the baseline are retrained on
--confirm-seeds fresh seeds; the winner is the best mean, and the summary gives its gain over
the baseline.
"""


@cli.command(help=_STUDY_HELP)
@click.argument("study_file", required=False, type=click.Path(path_type=Path))
@click.option(
    "--task", default=None, help=_from_file("task", "Built-in task, imagefolder:PATH or module:function.")
)
@click.option(
    "--n-trials", type=int, default=None, help=_from_file("n_trials", "The study's total number of trials.")
)
@click.option("--timeout", type=float, default=None, help="Stop starting trials after this many seconds.")
@click.option("--epochs", type=int, default=None, help=_from_file("epochs", "Epochs per trial."))
@click.option("--batch-size", type=int, default=None, help="Training batch size [default: the task's].")
@click.option("--storage", default=None, help=_from_file("storage", "Optuna storage URL (any RDB URL)."))
@click.option("--study-name", default=None, help="Study name [default: lrtune-<task>].")
@click.option(
    "--sampler", type=click.Choice(SAMPLER_NAMES), default=None, help=_from_file("sampler", "Optuna sampler.")
)
@click.option(
    "--pruner", type=click.Choice(PRUNER_NAMES), default=None, help=_from_file("pruner", "Optuna pruner.")
)
@click.option(
    "--schedules",
    default=None,
    help=_from_file(
        "schedules", f"Schedule types to search, comma-separated, from: {', '.join(SCHEDULE_TYPES)}."
    ),
)
@click.option(
    "--bounds",
    default=None,
    help=_from_file(
        "bounds", "finder.json from `lrtune find` (or its folder), or 'auto' to run the range test first."
    ),
)
@click.option(
    "--optimizer",
    type=click.Choice(OPTIMIZER_CHOICES),
    default=None,
    help=_from_file(
        "optimizer", "Optimizer; 'search' puts the optimizer into the space (one range test each)."
    ),
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help=_from_file("data_dir", "Dataset folder."),
)
@click.option(
    "--tracking-uri",
    default=None,
    help=_from_file(
        "tracking_uri", "MLflow tracking URI (artifacts of sqlite:///DIR/mlflow.db go to DIR/mlartifacts)."
    ),
)
@click.option("--experiment", default=None, help="MLflow experiment [default: the study name].")
@click.option(
    "--seed", type=int, default=None, help=_from_file("seed", "Base seed of the sampler and the trials.")
)
@click.option("--device", default=None, help=_from_file("device", "auto, cpu, cuda, cuda:N or mps."))
@click.option(
    "--amp/--no-amp", default=None, help="Mixed precision on CUDA [default: off, or the study file's]."
)
@click.option(
    "--confirm",
    type=int,
    default=None,
    metavar="K",
    help=_from_file(
        "confirm",
        "Retrain the K best trials and the baseline on fresh seeds before naming a winner (0: off).",
    ),
)
@click.option(
    "--confirm-seeds",
    type=int,
    default=None,
    metavar="M",
    help=_from_file("confirm_seeds", "Fresh seeds per confirmed candidate (0: off)."),
)
@click.option(
    "--param-group",
    "param_groups",
    multiple=True,
    metavar="NAME=REGEX",
    help="A part of the model (parameter names matching REGEX; first match wins) whose LR factor the study "
    "searches (log-uniform 0.01..1); repeatable [default: none, or the study file's param_groups].",
)
@click.option(
    "--heartbeat-interval",
    type=int,
    default=None,
    help=_from_file("heartbeat_interval", "Seconds between two heartbeats of a running trial."),
)
@click.option(
    "--grace-period",
    type=int,
    default=None,
    help=_from_file(
        "grace_period",
        "Seconds without a heartbeat after which a trial counts as crashed (FAIL, then run again).",
    ),
)
def study(study_file: Path | None, **options: Any) -> None:
    from lrtune.config import build_config, load_study_file

    options["param_groups"] = options["param_groups"] or None  # none given: the study file's

    config = build_config(load_study_file(study_file) if study_file is not None else None, options)

    import optuna

    from lrtune.study import run_study
    from lrtune.study.interrupts import StudyInterrupted, handle_signals

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress lines below replace Optuna's
    try:
        with handle_signals():
            outcome = run_study(
                config,
                callbacks=[_TrialPrinter(config.n_trials)],
                confirm_callbacks=[_ConfirmPrinter()],
                notify=lambda line: click.echo(line, err=True),
            )
    except StudyInterrupted as exc:  # before click turns it into "Aborted!"
        raise exc.as_error() from None
    _print_study_summary(outcome)


class _ConfirmPrinter:
    """Optuna callback of the confirmation study: one line per finished confirmation run."""

    def __call__(self, study: Any, trial: Any) -> None:
        from lrtune.study.confirm import CONFIRMS_ATTR, SEED_ATTR, confirm_progress

        if CONFIRMS_ATTR not in trial.user_attrs:
            return
        done, planned = confirm_progress(study)
        value = "-" if trial.value is None else f"{trial.value:.4g}"
        width = len(str(planned))
        click.echo(
            f"[{done:>{width}}/{planned}] confirm trial {trial.user_attrs[CONFIRMS_ATTR]:<4} "
            f"seed {trial.user_attrs[SEED_ATTR]:<10} {value:>8}  {trial.state.name:<8}"
        )


class _TrialPrinter:
    """Optuna callback: one line per finished trial on stdout."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: Any, trial: Any) -> None:
        from lrtune.study.engine import count_done

        done = count_done(study.get_trials(deepcopy=False))
        schedule = str(trial.params.get("schedule", "?"))
        optimizer = trial.params.get("optimizer")
        if optimizer:
            schedule += f"/{optimizer}"
        value = trial.value
        if value is None and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]
        shown = "-" if value is None else f"{value:.4g}"
        try:
            best = f"best {study.best_value:.4g} (#{study.best_trial.number})"
        except ValueError:
            best = "best -"
        seconds = trial.duration.total_seconds() if trial.duration is not None else 0.0
        width = len(str(self.n_trials))
        click.echo(
            f"[{done:>{width}}/{self.n_trials}] trial {trial.number:<4} {schedule:<16} {shown:>8}  "
            f"{trial.state.name:<8}  {best}  {seconds:.1f}s"
        )


def _print_study_summary(outcome: Any) -> None:
    import json

    click.echo(
        f"lrtune study: {outcome.study_name}: {outcome.complete} complete, {outcome.pruned} pruned, "
        f"{outcome.failed} failed (this run added {outcome.added}; total asked {outcome.n_trials})"
    )
    rows = [("objective", f"{outcome.metric} ({outcome.direction})")]
    best = outcome.best
    if outcome.confirm_planned:
        rows.append(("confirmed", f"{outcome.confirmed} of {outcome.confirm_planned} runs on fresh seeds"))
    if best is not None and best.get("confirmed"):
        seeds = len(best["seeds"])
        base = best["baseline"]
        rows += [
            (
                "winner",
                f"trial {outcome.best_trial}: {best['mean']:.4g} ± {best['std']:.2g} over {seeds} fresh seeds",
            ),
            (
                "baseline",
                f"trial {base['trial']} ({base['schedule']['type']} from the finder's suggestion): "
                f"{base['mean']:.4g} ± {base['std']:.2g}",
            ),
            ("gain", f"{best['gain']:+.4g} (winner − baseline, positive = better)"),
        ]
        if best["trial"] == base["trial"]:
            rows.append(("verdict", "the search found nothing better than the baseline: use the baseline"))
    elif best is not None:
        rows.append(
            ("best", f"{best['value']:.6g} (trial {outcome.best_trial}; not confirmed on fresh seeds)")
        )
    else:
        rows.append(("best", "no complete trial yet"))
    if best is not None:
        rows += [("schedule", json.dumps(best["schedule"])), ("optimizer", json.dumps(best["optimizer"]))]
    if best is not None and best.get("param_groups"):
        factors = {name: round(g["lr_factor"], 4) for name, g in best["param_groups"].items()}
        rows.append(("lr factors", json.dumps(factors)))
    rows.append(("storage", outcome.storage))
    if outcome.tracking_uri is not None:
        parent = f", parent run {outcome.parent_run_id}" if outcome.parent_run_id else ""
        rows.append(("mlflow", f"{outcome.tracking_uri}, experiment {outcome.experiment!r}{parent}"))
        if outcome.tracking_uri.startswith(("http://", "https://")):  # the server's own UI
            browse = f"{outcome.tracking_uri.rstrip('/')}/#/experiments?workflowType=machine_learning"
        else:
            browse = f"lrtune ui --tracking-uri {outcome.tracking_uri} --experiment {outcome.experiment}"
        rows.append(("browse", browse))
    if outcome.best is not None:
        rows.append(
            (
                "export",
                f"lrtune best --storage {outcome.storage} --study-name {outcome.study_name} --out best.json",
            )
        )
    for key, value in rows:
        click.echo(f"  {key:<10} {value}")


@cli.command()
@click.option(
    "--storage", default="sqlite:///lrtune.db", show_default=True, help="The study's Optuna storage URL."
)
@click.option("--study-name", default=None, help="The study [default: the only study in the storage].")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the JSON here (atomically) instead of to stdout.",
)
def best(storage: str, study_name: str | None, out: Path | None) -> None:
    """Print (or write) the best schedule of a study as JSON, for lrtune.load_schedule."""
    import json

    from lrtune.study.best import check_output_file, load_best, write_json_atomic

    if out is not None:
        check_output_file(out)
    data = load_best(storage, study_name)
    if out is None:
        click.echo(json.dumps(data, indent=2))
    else:
        write_json_atomic(out, data)
        confirmed = (
            f", confirmed on {len(data['seeds'])} fresh seeds, gain over the baseline {data['gain']:+.4g}"
            if data.get("confirmed")
            else ""
        )
        click.echo(
            f"wrote {out} ({data['metric']} {data['value']:.6g}, schedule {data['schedule']['type']}{confirmed})",
            err=True,
        )


@cli.command()
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Draw every schedule over one budget into this image (.png, .pdf or .svg).",
)
@click.option(
    "--steps", type=click.IntRange(min=8), default=1000, show_default=True, help="The budget drawn by --plot."
)
def schedules(plot_path: Path | None, steps: int) -> None:
    """List the schedule types: keys with defaults and formula; optionally draw them."""
    from lrtune.schedules import describe

    if plot_path is not None and plot_path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise click.UsageError(f"--plot {str(plot_path)!r} must end in .png, .pdf or .svg")
    if plot_path is not None and not (plot_path.parent if str(plot_path.parent) else Path(".")).is_dir():
        raise click.UsageError(f"the folder of --plot {str(plot_path)!r} does not exist")
    click.echo(describe())
    if plot_path is not None:
        from lrtune.plots import plot_schedules
        from lrtune.schedules import examples

        plot_schedules(examples(steps), steps, plot_path)
        click.echo(f"wrote {plot_path}", err=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``lrtune`` console script."""
    cli.main(args=argv, prog_name="lrtune")
