"""``lrtune find`` as a function: load the task, run the range test, write the files, log the run.

The CLI only parses options into :class:`FindSettings` and prints the outcome; everything
else happens here, so the same job runs from Python.

Example:
    >>> settings = FindSettings(task="digits", num_iter=50, repeats=1, tracking=None)  # doctest: +SKIP
    >>> outcome = run_find(settings)                                                   # doctest: +SKIP
    >>> outcome.result.suggested_lr                                                    # doctest: +SKIP
    0.31
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lrtune.atomic import write_atomically
from lrtune.errors import UsageError
from lrtune.optimizers import OPTIMIZER_NAMES, OptimizerSpec
from lrtune.parts import GroupSpec, check_specs
from lrtune.tracking import TrackingSettings

if TYPE_CHECKING:
    from lrtune.finder import FinderResult

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("lrtune-find")
STEP_MODES = ("exp", "linear")


@dataclass(frozen=True)
class FindSettings:
    """Everything ``lrtune find`` needs; the CLI builds one from its options.

    ``batch_size=None`` uses the task's own batch size; ``tracking=None`` logs nothing to MLflow.
    ``param_groups`` names parts of the model with fixed LR factors; the sweep moves every group by
    one multiplier, and the rates it reports are those of factor 1.
    """

    task: str = "digits"
    optimizer: str = "sgd"
    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_iter: int = 200
    step_mode: str = "exp"
    repeats: int = 3
    batch_size: int | None = None
    seed: int = 0
    device: str = "auto"
    data_dir: Path = Path("data")
    out: Path = DEFAULT_OUT
    tracking: TrackingSettings | None = field(default_factory=TrackingSettings)
    accumulation_steps: int = 1
    validation: bool = False
    amp: bool = False
    param_groups: tuple[GroupSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZER_NAMES:
            raise UsageError(
                f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZER_NAMES)}"
            )
        if self.step_mode not in STEP_MODES:
            raise UsageError(f"unknown step mode {self.step_mode!r}; choose exp or linear")
        for name in ("start_lr", "end_lr"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise UsageError(f"{name} must be a positive finite number, got {name}={value!r}")
        if self.start_lr >= self.end_lr:
            raise UsageError(f"start_lr must be below end_lr, got {self.start_lr=} and {self.end_lr=}")
        if self.num_iter < 2:
            raise UsageError(f"num_iter must be at least 2, got {self.num_iter=}")
        if self.repeats < 1:
            raise UsageError(f"repeats must be at least 1, got {self.repeats=}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {self.batch_size=}")
        if self.accumulation_steps < 1:
            raise UsageError(f"accumulation_steps must be at least 1, got {self.accumulation_steps=}")
        object.__setattr__(self, "param_groups", check_specs(self.param_groups))

    def params(self) -> dict[str, object]:
        """The settings as flat MLflow params (paths as strings, tracking left out)."""
        data = asdict(self)
        data.pop("tracking")
        data["param_groups"] = (
            ",".join(f"{g.name}={g.pattern}@{g.factor:g}" for g in self.param_groups) or "none"
        )
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


@dataclass(frozen=True)
class FindOutcome:
    """What a finished ``find`` produced."""

    result: FinderResult
    json_path: Path
    plot_path: Path
    run_id: str | None
    task_name: str


def check_writable_dir(path: Path) -> None:
    """Raise UsageError unless ``path`` is (or can be created as) a writable folder. Writes nothing."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {str(path)!r} exists and is not a folder")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"--out {str(path)!r} cannot be created: {str(ancestor)!r} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"--out {str(path)!r} is not writable")


def run_find(settings: FindSettings, *, progress: Callable[[int], None] | None = None) -> FindOutcome:
    """Run the whole ``find`` job; raises LrtuneError subclasses on bad input, before writing anything."""
    from lrtune.finder import LRFinder, lr_ladder

    lr_ladder(settings.start_lr, settings.end_lr, settings.num_iter, settings.step_mode)
    check_writable_dir(settings.out)

    import torch

    from lrtune.data import make_loader, resolve_device
    from lrtune.optimizers import build_optimizer
    from lrtune.parts import optimizer_groups
    from lrtune.tasks import load_task

    device = resolve_device(settings.device)
    task = load_task(settings.task, data_dir=settings.data_dir)
    if settings.tracking is not None:
        from lrtune.tracking import open_client

        open_client(settings.tracking)  # fail on a bad store before the sweep, not after

    torch.manual_seed(settings.seed)
    model = task.model().to(device)
    params = (
        optimizer_groups(model, settings.param_groups, base_lr=settings.start_lr)
        if settings.param_groups
        else model.parameters()
    )
    optimizer = build_optimizer(OptimizerSpec(settings.optimizer), params, lr=settings.start_lr)
    batch_size = settings.batch_size or task.batch_size
    train_loader = make_loader(
        task.train, batch_size=batch_size, shuffle=True, device=device, seed=settings.seed
    )
    val_loader = (
        make_loader(task.val, batch_size=batch_size, shuffle=False, device=device, seed=settings.seed)
        if settings.validation
        else None
    )
    finder = LRFinder(model, optimizer, task.loss, device=device)
    logger.info("range test on %s: %d×%d steps on %s", task.name, settings.repeats, settings.num_iter, device)
    result = finder.range_test(
        train_loader,
        start_lr=settings.start_lr,
        end_lr=settings.end_lr,
        num_iter=settings.num_iter,
        step_mode=settings.step_mode,
        accumulation_steps=settings.accumulation_steps,
        val_loader=val_loader,
        repeats=settings.repeats,
        amp=settings.amp,
        seed=settings.seed,
        progress=progress,
    )

    settings.out.mkdir(parents=True, exist_ok=True)
    json_path = settings.out / "finder.json"
    plot_path = settings.out / "finder.png"
    result.save_json(json_path)
    write_atomically(plot_path, result.plot)

    run_id = None
    if settings.tracking is not None:
        from lrtune.tracking import log_finder_run

        run_id = log_finder_run(
            settings.tracking,
            result=result,
            params={
                **settings.params(),
                "task_name": task.name,
                "batch_size": batch_size,
                "device": str(device),
            },
            files=[json_path, plot_path],
            run_name=f"find-{task.name}",
        )
    return FindOutcome(
        result=result, json_path=json_path, plot_path=plot_path, run_id=run_id, task_name=task.name
    )
