"""The random streams a sweep touches: generators found on the loaders, and reseeding per repeat."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _loader_generators(objects: Iterable[Any]) -> list[Any]:
    """Every RNG object found on the loaders (and their samplers), one attribute level deep."""
    found: dict[int, Any] = {}
    for obj in objects:
        if obj is None:
            continue
        holders = [obj, getattr(obj, "sampler", None), getattr(obj, "batch_sampler", None)]
        holders.append(getattr(holders[2], "sampler", None))
        for holder in holders:
            if holder is None or isinstance(holder, (list, tuple, Tensor)):
                continue
            try:
                values = list(vars(holder).values())
            except TypeError:
                continue
            for value in values:
                if isinstance(value, (torch.Generator, np.random.Generator, random.Random)):
                    found.setdefault(id(value), value)
    return list(found.values())


def _generator_states(objects: Iterable[Any]) -> list[tuple[Any, Any]]:
    """(generator, state) for every RNG found on the loaders."""
    states: list[tuple[Any, Any]] = []
    for gen in _loader_generators(objects):
        if isinstance(gen, torch.Generator):
            states.append((gen, gen.get_state()))
        elif isinstance(gen, np.random.Generator):
            states.append((gen, gen.bit_generator.state))
        else:
            states.append((gen, gen.getstate()))
    return states


def _restore_generator(gen: Any, state: Any) -> None:
    if isinstance(gen, torch.Generator):
        gen.set_state(state)
    elif isinstance(gen, np.random.Generator):
        gen.bit_generator.state = state
    else:
        gen.setstate(state)


def _reseed(loader: Any, seed: int) -> None:
    """Reseed the data order (and dropout) of one repeat; the caller restores every RNG afterwards.

    A loader with ``reseed(seed)`` reseeds itself; otherwise the generators found on it (a DataLoader's
    ``generator``) are reseeded. The global RNGs are always reseeded (a default DataLoader's shuffling draws
    from torch's).
    """
    reseed = getattr(loader, "reseed", None)
    if callable(reseed):
        reseed(seed)
    else:
        for gen in _loader_generators([loader]):
            if isinstance(gen, torch.Generator):
                gen.manual_seed(seed)
            elif isinstance(gen, np.random.Generator):
                gen.bit_generator.state = type(gen.bit_generator)(seed).state
            else:
                gen.seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
