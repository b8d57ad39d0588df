"""The ``lrtune`` command line: find, study, best, schedules, ui.

Thin by design: each command parses its options into a settings object, calls the
library, and prints. Errors become exit codes in one place (:class:`LrtuneGroup`):
a usage error prints one line ``Error: ...`` and exits 2, an ``LrtuneError`` exits with
its own code, Ctrl-C exits 130; no traceback unless ``LRTUNE_DEBUG=1``.

Only click and lrtune's torch-free modules are imported at the top, so
``lrtune --help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from lrtune.errors import LrtuneError
from lrtune.optimizers import OPTIMIZER_NAMES
from lrtune.tracking import DEFAULT_TRACKING_URI

logger = logging.getLogger("lrtune")

DEVICES = ("auto", "cpu", "cuda", "mps")


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
            _fail(str(exc).replace("\n", " "), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:
            if debug:
                raise
            _fail(f"unexpected {type(exc).__name__}: {exc} (set LRTUNE_DEBUG=1 for the traceback)", 1)
        if isinstance(result, int) and result != 0:
            sys.exit(result)
        sys.exit(0)


@click.group(cls=LrtuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lrtune")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Find a learning rate you can trust, then tune its schedule with Optuna and MLflow."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
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
def find(**options: Any) -> None:
    """Run a learning-rate range test and propose a rate with the bounds of the useful region."""
    from lrtune.find_job import FindSettings, run_find
    from lrtune.tracking import TrackingSettings

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
        from lrtune.tracking import mask_secrets

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
    import subprocess

    from lrtune.tracking import TrackingSettings, artifact_root, mask_secrets

    TrackingSettings(tracking_uri=tracking_uri)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", host]
    command += ["--port", str(port)]
    root = artifact_root(tracking_uri)
    if root is not None:
        command += ["--artifacts-destination", root]
    click.echo(
        f"MLflow UI for {mask_secrets(tracking_uri)} at http://{host}:{port} (Ctrl-C stops it)", err=True
    )
    raise SystemExit(subprocess.call(command))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``lrtune`` console script."""
    cli.main(args=argv, prog_name="lrtune")
