"""A message names options as its caller gives them: keywords from Python, flags on the command line."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import prune_snr
from prune_snr.errors import ConfigError, ModelError
from tests.command_line import invoke


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip


DATA = TensorDataset(torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 10)


def test_a_python_caller_reads_the_keyword_it_passed_in_an_error():
    with pytest.raises(ConfigError, match=r"^allocation='knapsack': choose one of") as caught:
        prune_snr.prune(tiny_net(), train=DATA, test=DATA, target=0.5, allocation="knapsack")
    assert "--" not in str(caught.value)
    with pytest.raises(ModelError, match=r"^points: no module named 'nosuch'"):
        prune_snr.measure(tiny_net(), train=DATA, test=DATA, points=["nosuch"])


def test_a_python_caller_reads_keywords_in_the_warning_of_an_unreachable_target():
    # 8-channel layers kept multiples of 8 cannot shrink: the closest reachable point is the model itself
    with pytest.warns(UserWarning) as caught:
        prune_snr.prune(
            tiny_net(), train=DATA, test=DATA, target=0.5, metric="macs", criterion="l1", allocation="uniform",
            finetune_epochs=0, bn_recalibrate=0, round_to=8, device="cpu",
        )  # fmt: skip
    closest = [str(w.message) for w in caught if "closest" in str(w.message)]
    assert closest and "target=0.5" in closest[0] and "round_to=8" in closest[0]
    assert "exact_target=True makes this an error" in closest[0] and "--" not in closest[0]


def test_the_command_line_reads_its_flags_in_the_same_error(tiny_run, tmp_path):
    out, _ = tiny_run
    result = invoke("measure", out / "model.pt", "--points", "nosuch", "--device", "cpu", "--out", tmp_path / "m")
    assert result.exit_code == 2 and "--points: no module named 'nosuch'" in result.output


def test_the_command_line_spelling_holds_for_the_whole_process_while_it_runs_threads_included():
    import threading

    from prune_snr.config.spelling import command_line

    made = []
    with command_line():  # a search's trials run on threads of their own
        worker = threading.Thread(target=lambda: made.append(str(ConfigError("--round-to 8: x"))))
        worker.start()
        worker.join()
    assert made == ["--round-to 8: x"] and str(ConfigError("--round-to 8: x")) == "round_to=8: x"


def test_a_quoted_command_line_and_a_path_keep_their_dashes():
    from prune_snr.config.spelling import in_keywords

    message = "runs/a--out/model.pt: no measurement; run prune-snr measure --out DIR first (--val-fraction 0.1)"
    assert in_keywords(message) == (
        "runs/a--out/model.pt: no measurement; run prune-snr measure --out DIR first (val_fraction=0.1)"
    )


@pytest.mark.parametrize(
    ("options", "keyword", "flag"),
    [
        ({"batch_size": 0}, "batch_size=0", "--batch-size 0"),
        ({"finetune_lr": 0.0}, "finetune_lr=0.0", "--finetune-lr 0.0"),  # a nested option: named by its flat key
        ({"round_to": 0}, "round_to=0", "--round-to 0"),
    ],
)
def test_a_bad_value_is_named_by_its_keyword_from_python_and_by_its_flag_on_the_command_line(options, keyword, flag):
    from prune_snr.config import PruneConfig, resolve
    from prune_snr.config.spelling import command_line

    with pytest.raises(ConfigError) as caught:
        resolve(PruneConfig, overrides=options)
    with command_line(), pytest.raises(ConfigError) as on_command_line:
        resolve(PruneConfig, overrides=options)
    assert str(caught.value).startswith(keyword + ":") and str(on_command_line.value).startswith(flag + ":")


def test_exports_flags_read_as_the_keywords_of_export_checkpoint():
    from prune_snr.config.spelling import in_keywords

    assert in_keywords("--calibration-size 8: use at least 32 images") == "calibration_size=8: use at least 32 images"
    assert in_keywords("--int8 needs calibration images") == "int8=True needs calibration images"


def test_a_word_after_a_flag_is_its_value_where_it_is_one():
    from prune_snr.config.spelling import in_keywords

    assert in_keywords("no CUDA device is visible here; use --device cpu or auto") == (
        "no CUDA device is visible here; use device='cpu' or auto"
    )
    assert in_keywords("its classifier is a convolution: use --no-afcc") == (
        "its classifier is a convolution: use afcc=False"
    )
