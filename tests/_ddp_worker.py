"""Run by tests/test_train.py under torchrun (2 CPU processes, gloo): trains with `fit` on the data and
saves each rank's final weights and history to OUT/rank{RANK}_{list,loader}.pt.

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_ddp_worker.py OUT
"""

import os
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

from vcell_lib.train import TrainConfig, fit


def regression_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A small noisy linear regression, the same on every rank (fit shards it)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=generator)


def make_model() -> torch.nn.Linear:
    torch.manual_seed(1)
    return torch.nn.Linear(4, 1)


def mse(model: torch.nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


CONFIG = TrainConfig(max_steps=6, lr=0.05, val_every=3, warmup_fraction=0.0, progress=False, device="cpu")  # gloo


def main(out: str) -> None:
    x, y = regression_data()
    rank = int(os.environ["RANK"])
    # A list of batches: fit gives rank r the batches r, r + 2, ...
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 64, 8)]
    model = make_model()
    history = fit(model, batches, mse, CONFIG, val_data=batches[:4])
    torch.save({"state": model.state_dict(), "history": history.__dict__}, f"{out}/rank{rank}_list.pt")
    # A DataLoader: fit rebuilds it with a DistributedSampler (rank r gets samples r, r + 2, ...).
    model = make_model()
    history = fit(model, DataLoader(TensorDataset(x, y), batch_size=8), mse, CONFIG)
    torch.save({"state": model.state_dict(), "history": history.__dict__}, f"{out}/rank{rank}_loader.pt")


if __name__ == "__main__":
    main(sys.argv[1])
