"""The one training loop of the book: `fit(model, train_data, loss_fn, config)`.

Taught in chapter 11 and reused in chapter 12: a seed, a device (CUDA, MPS or CPU), AdamW or Adam with a
linear warm-up then a cosine decay, gradient clipping, bf16 autocast on recent CUDA GPUs (fp32 elsewhere),
periodic validation, early stopping, checkpoints that resume exactly, a progress bar, and data
parallelism under `torchrun` with the same code. `loss_fn(model, batch)` returns a scalar tensor; the loop
only moves the batch to the device, so the loss may call any method of the model. Steps count optimizer
updates: `history.train_loss[i]` and `history.lr[i]` belong to update i (from 0).

Exact resumption: every epoch reseeds Python, NumPy and torch from (seed, epoch) before it iterates the
data, so the order of a shuffled DataLoader is a function of the epoch; a resumed run replays the
interrupted epoch up to the checkpoint (loading those batches, not training on them), then restores the
random states saved with it. Interrupted and uninterrupted runs end with the same weights.

Under `torchrun` (which sets WORLD_SIZE, RANK, LOCAL_RANK) each process trains a replica on its own shard
of the data and DistributedDataParallel averages the gradients. A DataLoader over a map-style dataset is
rebuilt with a DistributedSampler; from any other iterable each rank takes every world_size-th batch. If
no process group is running, `fit` starts one (gloo on CPU, nccl on CUDA) and keeps it for later fits and
your own collectives (starting one again after ending it can hang); it ends at exit. Rank 0 alone shows the
progress bar and writes the checkpoint. Every trainable parameter must get a gradient at every step (DDP's
default); freeze the ones a loss leaves unused.
"""

from __future__ import annotations

import atexit
import itertools
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, SequentialSampler

from vcell_lib.env import get_device, set_seed

__all__ = ["History", "TrainConfig", "fit", "make_scheduler", "to_device"]

_OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
# A checkpoint resumes only under the same schedule: these fields must match.
_SCHEDULE_FIELDS = "max_steps lr optimizer weight_decay warmup_fraction warmup_start_factor final_lr_fraction".split()


@dataclass
class TrainConfig:
    """How `fit` trains: steps, optimizer, schedule, clipping, validation, checkpoints. Taught in chapter 11.

    The learning rate rises linearly from `warmup_start_factor * lr` to `lr` over the first
    `warmup_fraction` of the steps, then follows a cosine down to `final_lr_fraction * lr` at `max_steps`
    (STATE's defaults: 0.03, 0.33, 0.3). Every `val_every` steps (and at the last step) `fit` validates and
    writes the checkpoint; it stops after `patience` validations without a new best and, with `restore_best`,
    ends on the best weights. `resume` continues from `checkpoint` when that file exists. `device=None`
    picks CUDA, then MPS, then CPU; `bf16` applies on CUDA GPUs that compute in it natively (Ampere and
    newer: A100, L4, H100; a T4 stays in fp32).
    """

    max_steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adamw", "adam"] = "adamw"
    warmup_fraction: float = 0.03
    warmup_start_factor: float = 0.33
    final_lr_fraction: float = 0.3
    grad_clip: float | None = 1.0
    val_every: int = 100
    patience: int | None = None
    restore_best: bool = True
    checkpoint: str | Path | None = None
    resume: bool = True
    seed: int = 0
    device: str | None = None
    bf16: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        checks = {
            "max_steps": (isinstance(self.max_steps, int) and self.max_steps >= 1, "an integer >= 1"),
            "lr": (self.lr > 0, "> 0"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "optimizer": (self.optimizer in _OPTIMIZERS, f"one of {sorted(_OPTIMIZERS)}"),
            "warmup_fraction": (0 <= self.warmup_fraction < 1, "in [0, 1)"),
            "warmup_start_factor": (0 < self.warmup_start_factor <= 1, "in (0, 1]"),
            "final_lr_fraction": (0 <= self.final_lr_fraction <= 1, "in [0, 1]"),
            "grad_clip": (self.grad_clip is None or self.grad_clip > 0, "None (no clipping) or > 0"),
            "val_every": (isinstance(self.val_every, int) and self.val_every >= 1, "an integer >= 1"),
            "patience": (self.patience is None or self.patience >= 1, "None (no early stopping) or >= 1"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {expected}, got {getattr(self, name)!r}")

    @property
    def warmup_steps(self) -> int:
        """Steps of linear warm-up: `warmup_fraction * max_steps` rounded, at most `max_steps - 1`."""
        return min(round(self.warmup_fraction * self.max_steps), self.max_steps - 1)


@dataclass
class History:
    """What `fit` saw: per-step training loss and lr, validations, the best step. Taught in chapter 11.

    `train_loss[i]` is update i's loss averaged over the ranks; `val_loss` holds (step, value) pairs, step
    counting the updates done; `best_step`/`best_val` the best validation (None/inf without val_data);
    `seconds` sums the wall time of every run that wrote to this history (resumes included).
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[tuple[int, float]] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_step: int | None = None
    best_val: float = math.inf
    stopped_early: bool = False
    seconds: float = 0.0
    steps: int = 0
    world_size: int = 1


def to_device(batch: Any, device: torch.device | str) -> Any:
    """`batch` with every tensor moved to `device`, through dicts, lists and (named) tuples. Taught in chapter 11."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(value, device) for value in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LRScheduler:
    """Linear warm-up then cosine decay, stepped once per update (see TrainConfig). Taught in chapter 11."""
    warmup = config.warmup_steps
    cosine = CosineAnnealingLR(optimizer, T_max=config.max_steps - warmup, eta_min=config.final_lr_fraction * config.lr)
    if warmup == 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=config.warmup_start_factor, total_iters=warmup)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


class _Loss(nn.Module):
    """The model and its loss as one module, so that DDP sees (and syncs) whatever the loss calls."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor]) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


def _distributed(prefer: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device), from torchrun's variables; starts the process group if none is running."""
    running = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if running else int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, get_device(prefer)
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world} but this torch has no torch.distributed: run a single process")
    device = get_device(prefer)
    if device.type == "cuda":  # one GPU per process
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not running:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return dist.get_rank(), dist.get_world_size(), device


def _shard(data: Iterable, rank: int, world: int, seed: int) -> Iterable:
    """A DataLoader over a map-style dataset rebuilt with a DistributedSampler; anything else unchanged."""
    plain = isinstance(data, DataLoader) and isinstance(data.sampler, (RandomSampler, SequentialSampler))
    if world == 1 or not plain or isinstance(data.dataset, IterableDataset) or data.batch_size is None:
        return data  # _batches takes every world-th batch
    shuffle = isinstance(data.sampler, RandomSampler)
    sampler = DistributedSampler(data.dataset, world, rank, shuffle=shuffle, seed=seed, drop_last=data.drop_last)
    return DataLoader(
        data.dataset,
        data.batch_size,
        sampler=sampler,
        num_workers=data.num_workers,
        collate_fn=data.collate_fn,
        pin_memory=data.pin_memory,
        drop_last=data.drop_last,
        worker_init_fn=data.worker_init_fn,
        persistent_workers=data.persistent_workers,
    )


def _stream(data: Iterable, seed: int, epoch: int, position: int, rng: dict | None, rank: int, world: int) -> Iterator:
    """(epoch, batches seen in it, batch), epoch after epoch, from a checkpoint's (epoch, position, rng)."""
    while True:
        set_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))  # the epoch fixes the order
        batches = _batches(data, epoch, rank, world)
        seen = sum(1 for _ in itertools.islice(batches, position))  # replay an interrupted epoch
        if rng is not None:
            _set_rng_state(rng)  # as they were at the checkpoint
            rng = None
        for batch in batches:
            seen += 1
            yield epoch, seen, batch
        if seen == 0:
            where = f" to rank {rank}" if world > 1 else ""
            raise ValueError(
                f"train_data gave no batch{where} in epoch {epoch}: pass a non-empty list or DataLoader "
                "(a generator is used up after one epoch)"
            )
        epoch, position = epoch + 1, 0


def _batches(data: Iterable, epoch: int, rank: int, world: int) -> Iterator:
    """This rank's batches of one epoch."""
    sampler = getattr(data, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
        return iter(data)
    return itertools.islice(iter(data), rank, None, world)


def _checked(loss: Any, step: int, world: int) -> float:
    """The loss averaged over ranks, after checking it is a finite scalar that can be backpropagated."""
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {shape}: reduce it, e.g. with .mean()")
    if not loss.requires_grad:
        raise ValueError("loss_fn's loss does not depend on any trainable parameter: compute it from model(...)")
    value = loss.detach().float().clone()
    if world > 1:
        dist.all_reduce(value)  # every rank sees the same value (and raises together)
        value /= world
    if not math.isfinite(value := value.item()):
        raise FloatingPointError(
            f"loss is {value} at step {step}: lower TrainConfig.lr, keep grad_clip on, or look for NaN/inf in the batch"
        )
    return value


@torch.no_grad()
def _validate(
    model: nn.Module, data: Iterable, loss_fn: Callable, device: torch.device, autocast: Any, rank: int, world: int
) -> float:
    """Mean of loss_fn over the validation batches (all ranks together), in eval mode."""
    model.eval()
    total = torch.zeros(2, device=device)
    for batch in _batches(data, 0, rank, world):
        with autocast:
            total += torch.stack([loss_fn(model, to_device(batch, device)).float(), torch.ones((), device=device)])
    if world > 1:
        dist.all_reduce(total)
    model.train()
    if total[1] == 0:
        raise ValueError("val_data yielded no batch: pass a non-empty list or DataLoader, or val_data=None")
    return (total[0] / total[1]).item()


def _cpu_copy(model: nn.Module) -> dict[str, Tensor]:
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


def _rng_state() -> dict[str, Any]:
    numpy = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (numpy[0], numpy[1].tolist(), *numpy[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state((state["numpy"][0], np.array(state["numpy"][1], dtype=np.uint32), *state["numpy"][2:]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically: a crash while writing leaves the previous one intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def fit(
    model: nn.Module,
    train_data: Iterable,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    config: TrainConfig | None = None,
    *,
    val_data: Iterable | None = None,
    on_validation: Callable[[int, nn.Module], None] | None = None,
) -> History:
    """Train `model` in place on `train_data` for `config.max_steps` updates. Taught in chapter 11.

    Parameters
    ----------
    model: the network; moved to the chosen device and trained there. Seed before building it.
    train_data: a re-iterable of batches (a list, a DataLoader), iterated epoch after epoch until
        `max_steps`; tensors inside a batch (also in dicts, lists, tuples) are moved to the device.
    loss_fn: `loss_fn(model, batch)` returns the scalar loss to minimise; it is also the validation loss.
    config: a TrainConfig (its defaults when None).
    val_data: batches for validation every `config.val_every` steps (mean of the per-batch losses).
    on_validation: called as `on_validation(step, model)` at the same moments (and at the last step), on
        rank 0 only, with the model in eval mode: to record metrics along training (a learning curve).
        It should leave the global random state alone, or resumed runs will differ from uninterrupted ones.

    Returns
    -------
    The History. The model ends in eval mode, on the device, with its best validation weights when
    `config.restore_best` and val_data are given (its last weights otherwise).
    """
    config = config or TrainConfig()
    rank, world, device = _distributed(config.device)
    model.to(device).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("model has no trainable parameters (all have requires_grad=False)")
    runner: nn.Module = _Loss(model, loss_fn)
    if world > 1:
        runner = DistributedDataParallel(runner, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = _OPTIMIZERS[config.optimizer](parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, config)
    bf16 = config.bf16 and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8  # Ampere+
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
    val = None if val_data is None else _shard(val_data, rank, world, config.seed)
    schedule = {name: getattr(config, name) for name in _SCHEDULE_FIELDS}

    history, best, rng, step, epoch, position = History(world_size=world), None, None, 0, 0, 0
    path = None if config.checkpoint is None else Path(config.checkpoint)
    if path is not None and config.resume and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if changed := {k: (saved["schedule"][k], v) for k, v in schedule.items() if saved["schedule"][k] != v}:
            raise ValueError(
                f"checkpoint {path} was written with another schedule, {{field: (saved, now)}}: {changed}; "
                "use the same TrainConfig, another checkpoint path, or resume=False"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        step, epoch, position, best, rng = (saved[k] for k in ("step", "epoch", "position", "best", "rng"))
        history = History(**{**saved["history"], "world_size": world})

    shown = config.progress and rank == 0
    if shown:
        from tqdm.auto import tqdm  # imported only when shown: no widget warnings otherwise
    else:
        from tqdm import tqdm
    with tqdm(total=config.max_steps, initial=step, disable=not shown, unit="step") as bar:
        start, seconds = time.perf_counter(), history.seconds
        batches = _stream(_shard(train_data, rank, world, config.seed), config.seed, epoch, position, rng, rank, world)
        while step < config.max_steps and not history.stopped_early:
            epoch, position, batch = next(batches)
            with autocast:
                loss = runner(to_device(batch, device))
            history.train_loss.append(_checked(loss, step, world))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(parameters, config.grad_clip)
            history.lr.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{history.train_loss[-1]:.4g}", refresh=False)
            if step % config.val_every and step < config.max_steps:
                continue
            if val is not None:
                value = _validate(model, val, loss_fn, device, autocast, rank, world)
                history.val_loss.append((step, value))
                bar.set_postfix(loss=f"{history.train_loss[-1]:.4g}", val=f"{value:.4g}", refresh=False)
                if value < history.best_val:
                    history.best_val, history.best_step = value, step
                    best = _cpu_copy(model) if config.restore_best else None
                waited = sum(s > (history.best_step or 0) for s, _ in history.val_loss)  # validations since the best
                history.stopped_early = config.patience is not None and waited >= config.patience
            if on_validation is not None and rank == 0:
                model.eval()
                on_validation(step, model)
                model.train()
            history.steps, history.seconds = step, seconds + time.perf_counter() - start
            if path is not None and rank == 0:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": _rng_state()}
                state |= {"scheduler": scheduler.state_dict(), "step": step, "epoch": epoch, "position": position}
                _save(path, {**state, "best": best, "history": asdict(history), "schedule": schedule})
    if best is not None:
        model.load_state_dict(best)
    history.steps, history.seconds = step, seconds + time.perf_counter() - start
    model.eval()
    return history
