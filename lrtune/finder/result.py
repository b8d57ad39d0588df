"""What a range test found: :class:`FinderResult`, its JSON form and its plot."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lrtune.atomic import write_json_atomically
from lrtune.errors import UsageError


def _json_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _floats(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class FinderResult:
    """What a range test found. ``lrs``/``losses`` are the curve the suggestion was read from.

    Attributes:
        suggested_lr, lr_low, lr_high: the suggestion and the bounds of the useful region.
        lrs: learning rate of each point (group 0's); ``losses``: the smoothed (median) loss there.
        diverged: whether the sweep (at least half of the repeats) stopped on divergence.
        num_iter, repeats: as requested. ``spread_decades``: spread of the repeats' suggestions, or None.
        flags, method, confidence, estimates: from :mod:`lrtune.suggest`.
        raw_losses: the median raw curve behind ``losses``; ``curves``: every repeat's raw curve, each a
            prefix over ``curve_lrs``; ``per_repeat``: each usable repeat's suggested LR;
            ``diverged_repeats``: whether each repeat diverged.
        loss_source: ``"train"``, or ``"val"`` when the suggestion used the validation curve; then
            ``train_lrs``/``train_losses``/``train_raw_losses`` keep the training curve.
        settings: the sweep's settings (ladder, accumulation, AMP, seed, optimizer, device, ...).
        seconds: wall-clock time of the sweeps.
    """

    suggested_lr: float
    lr_low: float
    lr_high: float
    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    diverged: bool
    num_iter: int
    repeats: int
    spread_decades: float | None
    flags: tuple[str, ...]
    method: str
    confidence: str = ""
    estimates: Mapping[str, float] = field(default_factory=dict)
    raw_losses: tuple[float, ...] = ()
    curves: tuple[tuple[float, ...], ...] = ()
    curve_lrs: tuple[float, ...] = ()
    per_repeat: tuple[float, ...] = ()
    diverged_repeats: tuple[bool, ...] = ()
    loss_source: str = "train"
    train_lrs: tuple[float, ...] | None = None
    train_losses: tuple[float, ...] | None = None
    train_raw_losses: tuple[float, ...] | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict: floats, lists, strings, null (non-finite floats become null)."""

        def plain(value: Any) -> Any:
            if isinstance(value, float):
                return _json_float(value)
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            if isinstance(value, Mapping):
                return {str(k): plain(v) for k, v in value.items()}
            return value

        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON; parent folders are created, the file is replaced atomically."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(target, self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinderResult:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        missing = [k for k in ("suggested_lr", "lr_low", "lr_high", "lrs", "losses") if k not in data]
        if missing:
            raise UsageError(f"not a finder result: missing {', '.join(missing)}")

        def num(value: Any) -> float:
            return math.nan if value is None else float(value)

        def seq(value: Any) -> tuple[float, ...]:
            return tuple(num(v) for v in value)

        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for key in ("suggested_lr", "lr_low", "lr_high", "seconds"):
            if key in kwargs:
                kwargs[key] = num(kwargs[key])
        for key in ("lrs", "losses", "raw_losses", "curve_lrs", "per_repeat"):
            if key in kwargs:
                kwargs[key] = seq(kwargs[key])
        for key in ("train_lrs", "train_losses", "train_raw_losses"):
            if kwargs.get(key) is not None:
                kwargs[key] = seq(kwargs[key])
        if "curves" in kwargs:
            kwargs["curves"] = tuple(seq(c) for c in kwargs["curves"])
        if "flags" in kwargs:
            kwargs["flags"] = tuple(str(f) for f in kwargs["flags"])
        if "diverged_repeats" in kwargs:
            kwargs["diverged_repeats"] = tuple(bool(d) for d in kwargs["diverged_repeats"])
        if kwargs.get("spread_decades") is not None:
            kwargs["spread_decades"] = float(kwargs["spread_decades"])
        if "estimates" in kwargs:
            kwargs["estimates"] = {str(k): num(v) for k, v in kwargs["estimates"].items()}
        kwargs.setdefault("diverged", False)
        kwargs.setdefault("num_iter", len(kwargs["lrs"]))
        kwargs.setdefault("repeats", 1)
        kwargs.setdefault("spread_decades", None)
        kwargs.setdefault("flags", ())
        kwargs.setdefault("method", "")
        return cls(**kwargs)

    @classmethod
    def load_json(cls, path: str | os.PathLike[str]) -> FinderResult:
        """Read a file written by :meth:`save_json`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read finder result {str(path)!r}: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"finder result {str(path)!r} is not a JSON object")
        return cls.from_dict(data)

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Draw the curve with the suggestion and bounds to a PNG (:func:`lrtune.plots.plot_finder`)."""
        from lrtune.plots import plot_finder

        plot_finder(self, path)
