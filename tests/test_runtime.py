"""Specs of runtime.py: devices under torchrun, loaders, the CPU's memory layout."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset


def test_a_numbered_gpu_under_torchrun_is_refused_in_one_line(monkeypatch):
    from prune_snr.errors import ConfigError
    from prune_snr.runtime import resolve_device

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="every rank on GPU 1"):
        resolve_device("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError, match="no CUDA device"):  # alone, cuda:1 is only refused where no GPU is visible
        resolve_device("cuda:1")


def test_loaders_take_the_workers_of_the_block_they_are_made_in_unless_given_their_own():
    from prune_snr.runtime import default_workers, loader_workers, make_loader

    assert make_loader(range(8), batch_size=4, shuffle=False).num_workers == default_workers()
    with loader_workers(2):
        assert make_loader(range(8), batch_size=4, shuffle=False).num_workers == 2
        assert make_loader(range(8), batch_size=4, shuffle=False, workers=0).num_workers == 0
    assert default_workers() == 0, "no GPU here: loader processes would only take the cores the model computes on"


def test_a_bad_workers_count_is_one_line():
    from prune_snr.config import MeasureConfig, PruneConfig, resolve
    from prune_snr.errors import ConfigError

    for kind in (MeasureConfig, PruneConfig):
        with pytest.raises(ConfigError, match="workers=-1: use 0"):
            resolve(kind, overrides={"workers": -1})


def test_cudnn_picks_its_fastest_convolutions_on_a_gpu_only(monkeypatch):
    import torch

    from prune_snr.runtime import tune_convolutions

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    tune_convolutions(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    tune_convolutions(torch.device("cuda", 0))
    assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cuda.matmul.allow_tf32 is False, "heads and fields keep float32 matmuls"


class _Layout(nn.Module):
    """Records whether the feature maps reaching it are channels-last (and, with ``view``, flattens them by a view,
    which channels-last maps cannot take)."""

    def __init__(self, view: bool = False):
        super().__init__()
        self.view, self.seen = view, []

    def forward(self, x):
        self.seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return x.view(len(x), -1) if self.view else x.flatten(1)


def _net(view: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 1),
        _Layout(view),
        nn.Linear(256, 5),
    ).eval()


DATA = TensorDataset(torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(40) % 5)


def test_evaluation_on_the_cpu_runs_channels_last_with_the_same_grade_and_hands_the_weights_back_as_they_were():
    from prune_snr.train.loop import evaluate

    net = _net()
    strides = [p.stride() for p in net.parameters()]
    with torch.no_grad():
        expected = (net(DATA.tensors[0]).argmax(1) == DATA.tensors[1]).float().mean().item()
    net[4].seen.clear()
    assert evaluate(net, DATA, batch_size=16)["accuracy"] == expected
    # one image each way (the outputs compared), then the 3 batches channels-last
    assert net[4].seen == [False, True, True, True, True]
    assert [p.stride() for p in net.parameters()] == strides


def test_a_model_that_views_its_feature_maps_is_evaluated_in_its_own_layout():
    from prune_snr.train.loop import evaluate

    net = _net(view=True)
    with torch.no_grad():
        expected = (net(DATA.tensors[0]).argmax(1) == DATA.tensors[1]).float().mean().item()
    net[4].seen.clear()
    assert evaluate(net, DATA, batch_size=16)["accuracy"] == expected
    assert net[4].seen == [False, True, False, False, False]  # its view failed on the one image: batches as they are


def test_batchnorm_recalibration_runs_channels_last_on_the_cpu():
    from prune_snr.prune.recalibrate import recalibrate_batchnorm

    net = _net()
    net[4].seen.clear()
    batches = [(DATA.tensors[0][i : i + 8], DATA.tensors[1][i : i + 8]) for i in range(0, 40, 8)]
    assert recalibrate_batchnorm(net, batches, batches=5) == 5
    assert net[4].seen == [False, True] + [True] * 5


def test_the_image_the_layouts_are_compared_on_draws_nothing_the_caller_would_draw_next():
    import random

    import numpy as np

    from prune_snr.runtime import first_image

    class Noisy(torch.utils.data.Dataset):  # a random transform drawing from all three generators
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(3, 4, 4) + random.random() + np.random.rand(), 0

    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    expected = torch.rand(1), random.random(), np.random.rand()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    assert first_image(Noisy()).shape == (3, 4, 4)
    assert (torch.rand(1), random.random(), np.random.rand()) == expected
    assert first_image([({"image": 1}, 0)]) is None and first_image([]) is None  # nothing to compare on: no switch


def test_a_model_whose_view_holds_for_one_image_alone_is_evaluated_in_its_own_layout():
    from prune_snr.train.loop import evaluate

    class ByChannel(nn.Module):  # a view a single channels-last image can take and a batch cannot
        def forward(self, x):
            n, c, h, w = x.shape
            return x.view(n * c, h * w).mean(1).view(n, c)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1), ByChannel(), nn.Linear(4, 5))
    with torch.no_grad():
        expected = (net(DATA.tensors[0]).argmax(1) == DATA.tensors[1]).sum().item() / len(DATA)
    assert evaluate(net.eval(), DATA, batch_size=16)["accuracy"] == expected


def test_recalibration_leaves_batchnorm_as_it_was_when_the_data_cannot_be_read():
    from prune_snr.prune.recalibrate import recalibrate_batchnorm

    def broken():
        raise OSError("disk gone")
        yield

    net = _net()
    with pytest.raises(OSError, match="disk gone"):
        recalibrate_batchnorm(net, broken(), batches=2)
    assert net[1].momentum == 0.1 and not net[1].training
