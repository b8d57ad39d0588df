"""Benchmark lrtune's range test against a bare training loop and torch-lr-finder.

Every variant trains the same model (rebuilt from the same initial weights before each run), from the same
loader object (a torch ``DataLoader`` over a ``TensorDataset``, reseeded before each run so every variant sees
the same batches in the same order), for the same number of optimizer steps over the same exponential LR ladder:

- ``bare loop``: zero_grad / forward / loss / backward / step, with the LR set on the param groups per step
  and no host read of the loss: the floor for any finder.
- ``lrtune``: :meth:`lrtune.finder.LRFinder.range_test` with ``repeats=1`` and ``stop_on_divergence=False``
  (so it runs every step), snapshot, restore and suggestion included.
- ``torch-lr-finder``: ``LRFinder(model, optimizer, criterion).range_test(...)`` plus ``reset()`` with a
  divergence threshold so high that it never stops early (installed for the comparison only:
  ``pip install torch-lr-finder==0.2.2``).
- ``lrtune + make_loader``: lrtune fed by its own device-resident batches (:func:`lrtune.data.make_loader`)
  instead of the DataLoader: an extra row, not part of the like-for-like comparison.

The variants run interleaved (A B C D, A B C D, ...) so machine noise hits them alike; the ratios are medians
of the per-round ratios. Every run's optimizer steps are counted with a step hook and printed: the runs do
equal work. Peak memory is the rise of the process's peak RSS over its RSS before the run (the peak is reset
through ``/proc/self/clear_refs``), or of ``torch.cuda.max_memory_allocated`` on CUDA.

Run from the repository root::

    .venv/bin/python scripts/bench_finder.py            # both models, about 5 minutes on 2 cores
    .venv/bin/python scripts/bench_finder.py --quick    # about a minute
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib.metadata
import io
import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lrtune.data import make_loader, resolve_device
from lrtune.errors import UsageError
from lrtune.finder import LRFinder, lr_ladder
from lrtune.tasks import load_task

BARE = "bare loop"
LRTUNE = "lrtune"
TLF = "torch-lr-finder"
LRTUNE_DEVICE = "lrtune + make_loader"

GOAL_VS_BARE = 1.05  # lrtune / bare loop, on every model
GOAL_VS_TLF = 0.90  # lrtune / torch-lr-finder, on the tiny model

Criterion = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ModelCase:
    """One benchmarked model: its layer widths, batch size, steps and data."""

    name: str
    widths: tuple[int, ...]
    batch_size: int
    steps: int
    repeats: int
    data: TensorDataset
    data_label: str


@dataclass
class Measurements:
    """Seconds, peak-memory rises (bytes) and optimizer steps of every run of one variant."""

    seconds: list[float] = field(default_factory=list)
    peak_bytes: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------- data and models


def mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLUs between them."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


def synthetic_classes(samples: int, features: int, classes: int, seed: int = 0) -> TensorDataset:
    """Gaussian inputs labelled by a random linear teacher (learnable, so the loss really descends)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=gen)
    teacher = torch.randn(features, classes, generator=gen)
    y = (x @ teacher + 0.5 * torch.randn(samples, classes, generator=gen)).argmax(dim=1)
    return TensorDataset(x, y)


def torch_loader(
    data: TensorDataset, batch_size: int, kind: str, generator: torch.Generator
) -> DataLoader[Any]:
    """The DataLoader every variant shares (no workers: the same process does all the work).

    ``batched``: the sampler yields whole index lists and the dataset is indexed once per batch (the fast way
    to serve a TensorDataset); ``per-sample``: the default collation of one item at a time.
    """
    if kind == "batched":
        sampler = BatchSampler(RandomSampler(data, generator=generator), batch_size, drop_last=True)
        return DataLoader(data, batch_size=None, sampler=sampler, generator=generator)
    return DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)


# --------------------------------------------------------------------------- memory


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} is not in /proc/self/status")


class PeakMemory:
    """Peak memory of a block: CUDA's allocator statistics, or the process's peak RSS on Linux."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.available = self.cuda or Path("/proc/self/clear_refs").exists()
        self._libc: Any = None
        with contextlib.suppress(OSError):
            self._libc = ctypes.CDLL("libc.so.6")
        self.base = 0

    def start(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        if not self.available:
            return
        if self._libc is not None:
            self._libc.malloc_trim(0)  # hand freed heap pages back, so the next rise is counted
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            self.available = False
            return
        self.base = _status_kib("VmRSS") * 1024

    def rise(self) -> int:
        """Bytes the peak rose above the level at :meth:`start` (-1 when it cannot be measured)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device)) - self.base
        if not self.available:
            return -1
        return _status_kib("VmHWM") * 1024 - self.base


# --------------------------------------------------------------------------- the variants


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _endless(loader: Iterable[Any]) -> Iterator[Any]:
    while True:
        yield from loader


def bare_loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Criterion,
    loader: Iterable[Any],
    ladder: Sequence[float],
    device: torch.device,
) -> None:
    """The plain training loop with the LR set per step; no value is read back from the device."""
    model.train()
    batches = _endless(loader)
    for lr in ladder:
        inputs, targets = next(batches)
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()
    _sync(device)


def lrtune_finder(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Criterion,
    loader: Iterable[Any],
    start_lr: float,
    end_lr: float,
    steps: int,
    device: torch.device,
) -> None:
    """lrtune's range test over every step (no stop on divergence), one repeat."""
    finder = LRFinder(model, optimizer, criterion, device=device)
    finder.range_test(
        loader, start_lr=start_lr, end_lr=end_lr, num_iter=steps, repeats=1, stop_on_divergence=False
    )
    _sync(device)


def tlf_finder(
    tlf: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Criterion,
    loader: DataLoader[Any],
    start_lr: float,
    end_lr: float,
    steps: int,
    device: torch.device,
) -> None:
    """torch-lr-finder's range test and reset; its progress bar and messages go nowhere."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder = tlf.LRFinder(model, optimizer, criterion, device=device)
        finder.range_test(loader, start_lr=start_lr, end_lr=end_lr, num_iter=steps, diverge_th=10**12)
        finder.reset()
    _sync(device)


# --------------------------------------------------------------------------- one model


def bench_model(
    case: ModelCase,
    *,
    device: torch.device,
    loader_kind: str,
    start_lr: float,
    end_lr: float,
    tlf: Any,
) -> dict[str, Measurements]:
    """Run every variant ``case.repeats`` times, interleaved, after one untimed warm-up round."""
    torch.manual_seed(0)
    model = mlp(case.widths).to(device)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    criterion: Criterion = F.cross_entropy
    generator = torch.Generator()
    shared = torch_loader(case.data, case.batch_size, loader_kind, generator)
    resident = make_loader(
        case.data, batch_size=case.batch_size, shuffle=True, device=device, seed=0, drop_last=True
    )
    ladder = [float(v) for v in lr_ladder(start_lr, end_lr, case.steps)]
    counter = [0]

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        model.load_state_dict(initial)
        for p in model.parameters():
            p.grad = None  # every run starts without gradients and with a new optimizer
        optimizer = torch.optim.SGD(model.parameters(), lr=start_lr, momentum=0.9)
        optimizer.register_step_post_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
        generator.manual_seed(0)
        return model, optimizer

    runs: dict[str, Callable[[nn.Module, torch.optim.Optimizer], None]] = {
        BARE: lambda m, o: bare_loop(m, o, criterion, shared, ladder, device),
        LRTUNE: lambda m, o: lrtune_finder(m, o, criterion, shared, start_lr, end_lr, case.steps, device),
    }
    if tlf is not None:
        runs[TLF] = lambda m, o: tlf_finder(
            tlf, m, o, criterion, shared, start_lr, end_lr, case.steps, device
        )
    runs[LRTUNE_DEVICE] = lambda m, o: lrtune_finder(
        m, o, criterion, resident, start_lr, end_lr, case.steps, device
    )

    memory = PeakMemory(device)
    results = {name: Measurements() for name in runs}
    repeats = case.repeats
    for round_ in range(repeats + 1):  # round 0 warms up caches and allocators and is not kept
        for name, run in runs.items():
            m, o = fresh()
            counter[0] = 0
            memory.start()
            started = time.perf_counter()
            run(m, o)
            seconds = time.perf_counter() - started
            peak = memory.rise()
            if round_:
                results[name].seconds.append(seconds)
                results[name].peak_bytes.append(peak)
                results[name].steps.append(counter[0])
        print(f"  {case.name}: round {round_}/{repeats}{' (warm-up)' if not round_ else ''}", flush=True)
    return results


def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Per-round ratios a[i] / b[i] (the rounds are interleaved, so each pair saw the same machine)."""
    return [x / y for x, y in zip(a, b, strict=True)]


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """Lower quartile, median and upper quartile."""
    q1, q2, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float(q1), float(q2), float(q3)


def fmt_bytes(n: float) -> str:
    return "n/a" if n < 0 else f"{n / 2**20:.1f} MiB"


TABLE_HEADER = (
    f"{'model':<6} {'variant':<21} {'median s':>9} {'/ bare':>7} {'(IQR)':>13} {'min':>6} {'/ tlf':>6} "
    f"{'extra us/step':>13} {'{mem}':>11} {'steps':>6}"
)


def report(case: ModelCase, results: dict[str, Measurements]) -> dict[str, float]:
    """Print one model's rows; return lrtune's median ratios to the bare loop and to torch-lr-finder."""
    bare = results[BARE].seconds
    tlf = results[TLF].seconds if TLF in results else None
    found: dict[str, float] = {}
    for name, meas in results.items():
        q1, vs_bare, q3 = quartiles(ratios(meas.seconds, bare))
        vs_tlf = statistics.median(ratios(meas.seconds, tlf)) if tlf is not None else math.nan
        extra = statistics.median((t - b) / case.steps * 1e6 for t, b in zip(meas.seconds, bare, strict=True))
        if name == LRTUNE:
            found = {"bare": vs_bare, "tlf": vs_tlf}
        steps = "/".join(str(s) for s in sorted(set(meas.steps)))
        print(
            f"{case.name:<6} {name:<21} {statistics.median(meas.seconds):>9.4f} {vs_bare:>7.3f} "
            f"{f'({q1:.3f}-{q3:.3f})':>13} {min(meas.seconds) / min(bare):>6.3f} "
            f"{'-' if tlf is None else f'{vs_tlf:.3f}':>6} {extra:>13.1f} "
            f"{fmt_bytes(statistics.median(meas.peak_bytes)):>11} {steps:>6}"
        )
    return found


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time lrtune's range test against a bare training loop and torch-lr-finder "
        "(same model, loader and steps; interleaved repeats; median ratios; peak memory).",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto")
    parser.add_argument(
        "--steps",
        type=int,
        default=200,
        help="optimizer steps on the tiny model (default 200, lrtune's num_iter)",
    )
    parser.add_argument(
        "--mid-steps", type=int, default=40, help="optimizer steps on the mid-size model (default 40)"
    )
    parser.add_argument(
        "--repeats", type=int, default=31, help="timed rounds of every variant on the tiny model (default 31)"
    )
    parser.add_argument(
        "--mid-repeats",
        type=int,
        default=7,
        help="timed rounds of every variant on the mid-size model (default 7)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--models", default="tiny,mid", help="comma-separated models to run: tiny, mid (default both)"
    )
    parser.add_argument(
        "--loader",
        choices=("batched", "per-sample"),
        default="batched",
        help="how the shared DataLoader builds batches (default: batched, one index list per batch)",
    )
    parser.add_argument("--start-lr", type=float, default=1e-5, help="first LR of the ladder (default 1e-5)")
    parser.add_argument(
        "--end-lr",
        type=float,
        default=1.0,
        help="last LR of the ladder; low enough that no run produces NaN/inf (default 1.0)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run (100/10 steps, 5/2 rounds on the tiny/mid model): about 30 s",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.mid_steps, args.repeats, args.mid_repeats = 100, 10, 5, 2
    for name in ("steps", "mid_steps", "repeats", "mid_repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - {"tiny", "mid"})
    if unknown or not args.models:
        parser.error(f"--models takes tiny and/or mid, got {unknown or 'nothing'}")
    if args.steps < 10 or args.mid_steps < 10:
        parser.error("lrtune needs at least 10 steps to read a curve; use --steps/--mid-steps >= 10")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    wall_start = time.perf_counter()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        import torch_lr_finder as tlf
    except ImportError:
        tlf = None

    cases: list[ModelCase] = []
    if "tiny" in args.models:
        digits = cast(TensorDataset, load_task("digits").train)
        cases.append(
            ModelCase(
                "tiny", (64, 32, 10), 64, args.steps, args.repeats, digits, "digits train set (1437x64)"
            )
        )
    if "mid" in args.models:
        data = synthetic_classes(4096, 1024, 10)
        cases.append(
            ModelCase(
                "mid",
                (1024, 2048, 2048, 10),
                256,
                args.mid_steps,
                args.mid_repeats,
                data,
                "synthetic 4096x1024",
            )
        )

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    print("lrtune range-test benchmark")
    print(
        f"  torch {torch.__version__}, lrtune {version('lrtune')}, torch-lr-finder {version('torch-lr-finder')}, "
        f"numpy {np.__version__}"
    )
    print(
        f"  device {device}, torch threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"  LR ladder {args.start_lr:g} -> {args.end_lr:g} (exp), SGD momentum 0.9, cross-entropy; "
        f"shared DataLoader: {args.loader}, no workers; interleaved rounds after 1 warm-up"
    )
    for case in cases:
        widths = "-".join(str(w) for w in case.widths)
        print(
            f"  {case.name}: MLP {widths}, batch {case.batch_size}, {case.steps} steps, {case.repeats} rounds, "
            f"data: {case.data_label}"
        )
    if tlf is None:
        print(
            "  torch-lr-finder is not installed, so only the ratio to the bare loop is reported; "
            "to compare with it: .venv/bin/pip install torch-lr-finder==0.2.2"
        )
    print(
        "  equal work: no variant stops early (lrtune: stop_on_divergence=False; torch-lr-finder: "
        "diverge_th=1e12); the steps column counts optimizer.step() calls per run"
    )
    print(flush=True)

    all_results = []
    for case in cases:
        results = bench_model(
            case,
            device=device,
            loader_kind=args.loader,
            start_lr=args.start_lr,
            end_lr=args.end_lr,
            tlf=tlf,
        )
        all_results.append((case, results))

    mem_label = "peak alloc +" if device.type == "cuda" else "peak RSS +"
    header = TABLE_HEADER.replace("{mem}", mem_label)
    print()
    print(header)
    print("-" * len(header))
    found: dict[str, dict[str, float]] = {}
    for case, results in all_results:
        found[case.name] = report(case, results)
    print("-" * len(header))
    print(
        "/ bare, / tlf: medians (and quartiles) over the rounds of per-round time ratios; min: ratio of the "
        "fastest runs; extra us/step: "
        "median per-round time over the bare loop's, per step; memory: median rise of the peak over the level "
        f"before the run; '{LRTUNE_DEVICE}': lrtune on its device-resident batches instead of the shared "
        "DataLoader (still divided by the bare loop on the DataLoader)"
    )
    print()
    vs_bare = ", ".join(f"{name} {r['bare']:.3f}" for name, r in found.items())
    ok_bare = all(r["bare"] <= GOAL_VS_BARE for r in found.values())
    print(f"goal (a) lrtune / bare loop <= {GOAL_VS_BARE} on every model: {vs_bare}  {verdict(ok_bare)}")
    if tlf is None:
        print(f"goal (b) lrtune / torch-lr-finder <= {GOAL_VS_TLF} on the tiny model: not measured")
    elif "tiny" in found:
        r = found["tiny"]["tlf"]
        print(
            f"goal (b) lrtune / torch-lr-finder <= {GOAL_VS_TLF} on the tiny model: {r:.3f}  {verdict(r <= GOAL_VS_TLF)}"
        )
    print(f"wall time {time.perf_counter() - wall_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
