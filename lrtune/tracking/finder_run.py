"""The MLflow run of ``lrtune find``: its settings, the sweep's curves, the suggestion and its files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrtune.tracking.stores import (
    TrackingSettings,
    experiment_id,
    log_files,
    log_params,
    log_series,
    log_values,
    open_client,
)


def log_finder_run(
    settings: TrackingSettings,
    *,
    result: Any,
    params: Mapping[str, Any],
    files: Sequence[Path],
    run_name: str | None = None,
) -> str:
    """One MLflow run for ``lrtune find``: params, ``loss``/``lr`` curves, the suggestion, and files.

    Args:
        result: a :class:`lrtune.finder.FinderResult`.
        params: the settings of the sweep (task, optimizer, start/end LR, ...).
        files: artifacts to attach (``finder.json``, ``finder.png``).

    Returns:
        The run id.
    """
    client = open_client(settings)
    exp_id = experiment_id(client, settings)
    run = client.create_run(exp_id, run_name=run_name, tags={"lrtune.command": "find"})
    run_id = run.info.run_id
    status = "FAILED"
    try:
        log_params(client, run_id, params)
        log_series(client, run_id, {"loss": list(result.losses), "lr": list(result.lrs)})
        log_values(
            client,
            run_id,
            {
                "suggested_lr": result.suggested_lr,
                "lr_low": result.lr_low,
                "lr_high": result.lr_high,
                "spread_decades": result.spread_decades,
            },
        )
        client.set_tag(run_id, "lrtune.flags", ",".join(result.flags) or "none")
        client.set_tag(run_id, "lrtune.confidence", str(getattr(result, "confidence", "")))
        log_files(client, run_id, files)
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    return str(run_id)


__all__ = ["log_finder_run"]
