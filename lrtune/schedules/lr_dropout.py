"""Learning Rate Dropout (Lin et al., 2019): keep each coordinate's update with probability p.

At every optimizer step a Bernoulli(p) mask is drawn per parameter coordinate; coordinates
whose mask is 0 keep the value they had before the step (the optimizer's own state, such as
momentum buffers, still updates as usual, as in the paper). The masks come from a private
CPU :class:`torch.Generator`, so the global RNG is never touched and the state can be saved.

Example:
    >>> import torch
    >>> layer = torch.nn.Linear(50, 50)
    >>> opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    >>> dropout = LRDropout(opt, keep_prob=0.5, seed=0)
    >>> before = layer.weight.detach().clone()
    >>> layer(torch.ones(1, 50)).sum().backward()
    >>> opt.step()
    >>> 0.4 < (layer.weight != before).float().mean().item() < 0.6
    True
    >>> dropout.remove()
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from lrtune.errors import UsageError


class LRDropout:
    """Registers step pre/post hooks on ``optimizer`` that mask each step's update.

    Args:
        optimizer: the torch optimizer whose updates are masked.
        keep_prob: probability in (0, 1] that a coordinate's update is kept.
        seed: seed of the private mask generator.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, keep_prob: float, *, seed: int = 0) -> None:
        if not 0.0 < keep_prob <= 1.0:
            raise UsageError(f"lr_dropout keep probability must lie in (0, 1], got {keep_prob=}")
        self.keep_prob = float(keep_prob)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(int(seed))
        self._before: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.handles: list[RemovableHandle] = [
            optimizer.register_step_pre_hook(self._save),
            optimizer.register_step_post_hook(self._mask),
        ]

    def _save(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._before = [
            (param, param.detach().clone())
            for group in optimizer.param_groups
            for param in group["params"]
            if param.grad is not None
        ]

    @torch.no_grad()
    def _mask(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for param, old in self._before:
            keep = torch.rand(param.shape, generator=self.generator) < self.keep_prob
            new = param.detach()
            new.copy_(torch.where(keep.to(new.device, non_blocking=True), new, old))
        self._before = []

    def remove(self) -> None:
        """Unregister the hooks (idempotent)."""
        for handle in self.handles:
            handle.remove()
        self._before = []

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The mask generator's state."""
        return {"generator_state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the mask generator's state from :meth:`state_dict`."""
        if not isinstance(state, dict) or "generator_state" not in state:
            raise UsageError(
                "the lr_dropout state has no 'generator_state'; pass a state saved by this scheduler"
            )
        self.generator.set_state(state["generator_state"])
