"""Unit tests of vcell_lib.train, the book's one training loop (chapter 11)."""

import math
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_pre_hook  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from vcell_lib.train import TrainConfig, fit, to_device  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _ddp_worker import CONFIG as DDP_CONFIG  # noqa: E402
from _ddp_worker import make_model, mse, regression_data  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quiet(**kwargs) -> TrainConfig:
    """A config for tests: no progress bar, on the CPU in fp32 (exact comparisons) unless a device is given."""
    return TrainConfig(**{"progress": False, "device": "cpu", **kwargs})


def linear_batches(n_batches: int = 8, size: int = 32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_batches * size, 8, generator=generator)
    w = torch.randn(8, 1, generator=generator)
    y = x @ w + 0.01 * torch.randn(len(x), 1, generator=generator)
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)], w


def test_linear_regression_converges_on_cpu_in_fp32():
    batches, w = linear_batches()
    autocast_seen = []

    def loss_fn(model, batch):
        autocast_seen.append(torch.is_autocast_enabled("cpu"))
        return mse(model, batch)

    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    history = fit(model, batches, loss_fn, quiet(max_steps=300, lr=0.05))
    assert history.steps == len(history.train_loss) == len(history.lr) == 300 and history.world_size == 1
    assert sum(history.train_loss[-8:]) / 8 < sum(history.train_loss[:8]) / 8 / 1000
    assert torch.allclose(model.weight.detach().T, w, atol=0.01)
    assert not model.training and not any(autocast_seen)  # eval mode at the end; fp32 on CPU


@pytest.mark.parametrize("warmup_fraction", [0.2, 0.0])
def test_lr_schedule_is_linear_warmup_then_cosine(warmup_fraction):
    config = quiet(max_steps=40, lr=0.01, warmup_fraction=warmup_fraction, warmup_start_factor=0.33)
    history = fit(nn.Linear(2, 1), [(torch.ones(4, 2), torch.zeros(4, 1))], mse, config)
    warmup, lr, final = config.warmup_steps, config.lr, config.final_lr_fraction * config.lr
    assert warmup == round(warmup_fraction * 40)

    def expected(step: int) -> float:
        if step < warmup:
            return lr * (0.33 + (1 - 0.33) * step / warmup)
        return final + (lr - final) * (1 + math.cos(math.pi * (step - warmup) / (40 - warmup))) / 2

    assert history.lr[0] == pytest.approx(lr * 0.33 if warmup else lr, rel=1e-6)
    assert history.lr[warmup] == pytest.approx(lr, rel=1e-6)  # the peak, once warm-up is over
    last = final + (lr - final) * (1 + math.cos(math.pi * (39 - warmup) / (40 - warmup))) / 2
    assert history.lr[-1] == pytest.approx(last, rel=1e-6)  # one step short of the floor final_lr_fraction * lr
    assert history.lr == pytest.approx([expected(step) for step in range(40)], rel=1e-6)


@pytest.mark.parametrize("grad_clip", [0.5, None])
def test_grad_clip_bounds_the_gradient_norm_at_each_update(grad_clip):
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    handle = register_optimizer_step_pre_hook(record)  # sees the gradients the optimizer is about to use
    try:
        batches = [(torch.randn(4, 3), torch.zeros(4, 1)) for _ in range(3)]
        fit(nn.Linear(3, 1), batches, lambda m, b: 1e4 * mse(m, b), quiet(max_steps=5, grad_clip=grad_clip))
    finally:
        handle.remove()
    assert len(norms) == 5
    if grad_clip is None:
        assert max(norms) > 100
    else:
        assert max(norms) <= grad_clip * (1 + 1e-5)


class Dropped(nn.Module):
    """A model with dropout: exact resumption must also restore the random state."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=generator)
    data = TensorDataset(x, x.sum(1, keepdim=True))
    loader = DataLoader(data, batch_size=8, shuffle=True)  # 5 batches an epoch: the crash falls mid-epoch
    val = [(x[:8], x[:8].sum(1, keepdim=True))]

    def config(path):
        return quiet(max_steps=14, lr=0.01, val_every=7, warmup_fraction=0.2, checkpoint=path)

    torch.manual_seed(0)
    whole = Dropped()
    history_whole = fit(whole, loader, mse, config(tmp_path / "whole.pt"), val_data=val)

    calls = []

    def crashing(model, batch):
        calls.append(model.training)
        if sum(calls) == 8:  # the 8th training step, after the checkpoint of step 7
            raise RuntimeError("simulated crash")
        return mse(model, batch)

    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(Dropped(), loader, crashing, config(tmp_path / "split.pt"), val_data=val)
    calls.clear()
    torch.manual_seed(123)  # other initial weights: the checkpoint must overwrite them
    resumed = Dropped()
    history = fit(resumed, loader, lambda m, b: crashing(m, b) if m.training else mse(m, b),
                  config(tmp_path / "split.pt"), val_data=val)  # fmt: skip
    assert sum(calls) == 7  # only the 7 remaining steps were trained
    for name, value in whole.state_dict().items():
        assert torch.allclose(resumed.state_dict()[name], value, atol=1e-6), name
    assert history.train_loss == pytest.approx(history_whole.train_loss, abs=1e-6)
    assert [s for s, _ in history.val_loss] == [s for s, _ in history_whole.val_loss] == [7, 14]
    assert [v for _, v in history.val_loss] == pytest.approx([v for _, v in history_whole.val_loss], abs=1e-6)
    assert history.lr == pytest.approx(history_whole.lr, rel=1e-6) and history.steps == 14

    with pytest.raises(ValueError, match="max_steps"):  # another schedule cannot resume this checkpoint
        fit(Dropped(), loader, mse, quiet(max_steps=20, checkpoint=tmp_path / "split.pt"))


def scaled_line(slope: float, seed: int):
    x = torch.randn(16, 1, generator=torch.Generator().manual_seed(seed))
    return [(x, slope * x)]


def val_loss_of(model, data) -> float:
    with torch.no_grad():
        return mse(model, data[0]).item()


@pytest.mark.parametrize("restore_best", [True, False])
def test_early_stopping_stops_and_restores_the_best_weights(restore_best):
    # Training pulls the slope from 0 to 2; validation wants 1: its loss falls, then rises.
    train, val = scaled_line(2.0, 0), scaled_line(1.0, 1)
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    config = quiet(max_steps=400, lr=0.05, val_every=2, patience=3, restore_best=restore_best)
    history = fit(model, train, mse, config, val_data=val)
    steps, values = zip(*history.val_loss)
    assert history.stopped_early and history.steps < 100 and len(history.train_loss) == history.steps
    assert history.best_step == steps[values.index(min(values))] and history.best_val == min(values)
    assert steps[-1] == history.best_step + 3 * 2  # stopped after `patience` validations without a new best
    assert 0.8 < model.weight.item() < 1.2 or not restore_best
    if restore_best:
        assert val_loss_of(model, val) == pytest.approx(history.best_val, rel=1e-5)
    else:
        assert val_loss_of(model, val) == pytest.approx(values[-1], rel=1e-5) and values[-1] > 1.5 * min(values)


def test_on_validation_sees_the_model_at_each_validation_in_eval_mode():
    seen = []
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Dropout(0.5))
    nn.init.zeros_(model[0].weight)
    train = scaled_line(2.0, 0)
    fit(model, train, mse, quiet(max_steps=10, lr=0.05, val_every=4),
        on_validation=lambda step, m: seen.append((step, m.training, m[0].weight.item())))  # fmt: skip
    assert [step for step, _, _ in seen] == [4, 8, 10]  # every val_every steps, and the last one
    assert not any(training for _, training, _ in seen)
    assert seen[0][2] != seen[-1][2] and model[0].weight.item() == seen[-1][2]


def test_nan_loss_raises_with_its_step():
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        return mse(model, batch) * (math.nan if len(calls) == 4 else 1.0)

    with pytest.raises(FloatingPointError, match="nan at step 3"):
        fit(nn.Linear(2, 1), [(torch.ones(4, 2), torch.zeros(4, 1))], loss_fn, quiet(max_steps=10))


def test_errors_say_what_to_fix():
    model, batches = nn.Linear(2, 1), [(torch.ones(4, 2), torch.zeros(4, 1))]
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="train_data gave no batch"):
        fit(model, [], mse, quiet(max_steps=3))
    with pytest.raises(ValueError, match="generator is used up"):
        fit(model, iter(batches), mse, quiet(max_steps=3))
    with pytest.raises(ValueError, match="scalar tensor"):
        fit(model, batches, lambda m, b: (m(b[0]) - b[1]) ** 2, quiet(max_steps=3))


def test_to_device_moves_tensors_through_containers():
    Pair = namedtuple("Pair", "a b")
    batch = {"x": torch.ones(2), "pair": Pair(torch.zeros(1), "label"), "list": [torch.ones(1), 3]}
    moved = to_device(batch, "meta")
    assert moved["x"].device.type == "meta" and moved["list"][0].device.type == "meta" and moved["list"][1] == 3
    assert isinstance(moved["pair"], Pair) and moved["pair"].a.device.type == "meta" and moved["pair"].b == "label"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_trains_in_bf16_on_ampere_and_newer():
    batches, w = linear_batches()
    dtypes = []

    def loss_fn(model, batch):
        prediction = model(batch[0])
        dtypes.append((prediction.dtype, batch[0].device.type))
        return nn.functional.mse_loss(prediction.float(), batch[1])

    model = nn.Linear(8, 1)
    history = fit(model, batches, loss_fn, quiet(max_steps=300, lr=0.05, device="cuda"))
    bf16 = torch.cuda.get_device_capability()[0] >= 8
    assert set(dtypes) == {(torch.bfloat16 if bf16 else torch.float32, "cuda")}
    assert model.weight.device.type == "cuda" and model.weight.dtype == torch.float32  # fp32 master weights
    assert sum(history.train_loss[-8:]) < sum(history.train_loss[:8]) / 100
    assert torch.allclose(model.weight.detach().T.cpu(), w, atol=0.05)
    fit(model, batches, loss_fn, quiet(max_steps=2, device="cuda", bf16=False))
    assert dtypes[-1] == (torch.float32, "cuda")


def test_ddp_under_torchrun_averages_gradients_across_ranks(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch has no torch.distributed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = subprocess.run([*command, str(ROOT / "tests" / "_ddp_worker.py"), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=150)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]

    x, y = regression_data()
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 64, 8)]
    # Averaged gradients: the replicas equal one process trained on both ranks' batches (rank r gets r, r + 2, ...)
    both = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(batches[0::2], batches[1::2])]
    together = make_model()
    history = fit(together, both, mse, DDP_CONFIG, val_data=batches[:4])
    rank0_alone = make_model()
    fit(rank0_alone, batches[0::2], mse, DDP_CONFIG, val_data=batches[:4])
    # A DataLoader is resharded with a DistributedSampler: rank r gets samples r, r + 2, ...
    loader_together = make_model()
    fit(loader_together, DataLoader(TensorDataset(x, y), batch_size=16), mse, DDP_CONFIG)

    for kind, reference in (("list", together), ("loader", loader_together)):
        ranks = [torch.load(tmp_path / f"rank{rank}_{kind}.pt") for rank in (0, 1)]
        for name, value in reference.state_dict().items():
            assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), (kind, name)  # identical replicas
            assert torch.allclose(ranks[0]["state"][name], value, atol=1e-6), (kind, name)
            assert ranks[0]["history"]["world_size"] == 2 and ranks[0]["history"]["steps"] == DDP_CONFIG.max_steps
    rank0 = torch.load(tmp_path / "rank0_list.pt")
    assert not torch.allclose(rank0["state"]["weight"], rank0_alone.weight, atol=1e-2)  # not rank 0's data alone
    list_history = rank0["history"]
    assert [v for _, v in list_history["val_loss"]] == pytest.approx(
        [v for _, v in history.val_loss], rel=1e-6
    )  # validation over both shards
    assert list_history["train_loss"] == pytest.approx(history.train_loss, rel=1e-6)  # loss averaged over ranks
