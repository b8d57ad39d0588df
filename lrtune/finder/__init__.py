"""The learning-rate range test: sweep, online divergence stop, exact state restore, repeats.

:class:`LRFinder` trains a model for ``num_iter`` optimizer updates while the learning rate climbs a ladder
from ``start_lr`` to ``end_lr`` (:func:`lr_ladder`), records the raw loss of every update, and hands the raw
curves to :func:`lrtune.suggest.consensus`, which proposes a rate and the bounds of the useful region.

Modules (each module's docstring says how its part works):

- ``core``: :class:`LRFinder`, its arguments and the repeats around the sweeps.
- ``sweep``: one sweep of the ladder (accumulation, param-group ratios, validation points).
- ``monitor``: the divergence rule, on the host; losses read per update on CPU, one copy per poll
  (asynchronous on CUDA) elsewhere, so an accelerator's queue never waits for a step's loss.
- ``snapshot`` and ``rng``: exact restore of model, optimizer, grads, modes, scaler and every RNG.
- ``amp``: mixed precision on CUDA. ``batches``: batches from any loader onto the device.
- ``ladder``, ``settings``, ``result``: :func:`lr_ladder`, :class:`SweepSettings`, :class:`FinderResult`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(256, 4)
    >>> y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(256)
    >>> batches = [(x[i : i + 32], y[i : i + 32, None]) for i in range(0, 256, 32)]
    >>> model = nn.Linear(4, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.01)
    >>> result = LRFinder(model, opt, nn.functional.mse_loss).range_test(batches, num_iter=100)
    >>> result.diverged, 1e-3 < result.suggested_lr < 1.0
    (True, True)
"""

from lrtune.finder.amp import MAX_AMP_SKIPS as MAX_AMP_SKIPS
from lrtune.finder.core import LRFinder
from lrtune.finder.ladder import STEP_MODES, lr_ladder
from lrtune.finder.monitor import NOISE_SIGMAS as NOISE_SIGMAS
from lrtune.finder.result import FinderResult
from lrtune.finder.settings import SweepSettings

__all__ = ["STEP_MODES", "FinderResult", "LRFinder", "SweepSettings", "lr_ladder"]
