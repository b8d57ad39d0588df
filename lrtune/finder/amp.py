"""Mixed precision for the sweep (``amp=True``, CUDA only).

bf16 autocast where supported (no scaler), else fp16 autocast with a GradScaler; an update the scaler skips
(its scale went down) does not advance the sweep. In fp16 mode the scale is read on the host after every
update (one sync per update), the only per-step sync there is.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

MAX_AMP_SKIPS = 50  # consecutive fp16 overflow skips after which the sweep counts as diverged


@dataclass(frozen=True)
class _AmpPlan:
    dtype: torch.dtype | None  # None: no autocast
    use_scaler: bool
    device_type: str

    @property
    def name(self) -> str | None:
        return None if self.dtype is None else str(self.dtype).removeprefix("torch.")

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def _amp_plan(amp: bool, device: torch.device) -> _AmpPlan:
    if not amp:
        return _AmpPlan(None, False, device.type)
    if device.type != "cuda":
        logger.warning("amp=True is ignored on %s: mixed precision runs on CUDA only", device)
        return _AmpPlan(None, False, device.type)
    if torch.cuda.is_bf16_supported(including_emulation=False):  # native bf16 (Ampere and later)
        return _AmpPlan(torch.bfloat16, False, "cuda")
    return _AmpPlan(torch.float16, True, "cuda")
