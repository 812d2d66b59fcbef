"""Bring your own model: state_dict files in, a prune-snr checkpoint with the same logits out."""

import json

import pytest
import torch
from safetensors.torch import save_file

import prune_snr
from prune_snr.errors import CheckpointError, ModelError
from prune_snr.models import build_model
from prune_snr.models.weights import load_weights, read_state_dict
from tests.command_line import invoke


@pytest.mark.parametrize(
    "arch, suffix",
    [
        ("timm:efficientnet_b0", ".safetensors"),
        ("torchvision:resnet18", ".pth"),
        ("torchvision:mnasnet0_5", ".safetensors"),
    ],
)  # MNASNet checks its state_dict version
def test_imported_weights_give_a_checkpoint_with_the_source_models_logits(tmp_path, arch, suffix):
    torch.manual_seed(0)
    source = build_model(arch, num_classes=7, input_size=32).eval()
    weights = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, weights) if suffix == ".safetensors" else torch.save(state, weights)
    result = invoke(
        "import", arch, "--num-classes", 7, "--weights", weights, "--input-size", 32, "--out", tmp_path / "run"
    )
    assert result.exit_code == 0, result.output
    imported = prune_snr.load(tmp_path / "run" / "model.pt")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(imported(x), source(x))
    payload = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert payload["kind"] == "import" and payload["config"]["import"]["source"] == "weights"


def test_a_width_reduced_vgg16_imports_at_its_width_and_a_wrong_width_names_the_option(tmp_path):
    torch.manual_seed(0)
    source = build_model("vgg16", num_classes=10, width_mult=0.25).eval()
    torch.save(source.state_dict(), tmp_path / "w4.pt")
    args = ("import", "vgg16", "--num-classes", 10, "--weights", tmp_path / "w4.pt")
    refused = invoke(*args, "--out", tmp_path / "full")
    assert refused.exit_code != 0 and "128 input features" in refused.output and "--width-mult" in refused.output
    assert "--num-classes" not in refused.output  # the label count is right; the width is not
    result = invoke(*args, "--width-mult", 0.25, "--out", tmp_path / "w4")
    assert result.exit_code == 0, result.output
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(prune_snr.load(tmp_path / "w4" / "model.pt")(x), source(x))


def test_weights_nested_under_state_dict_with_a_module_prefix_load(tmp_path):
    model = build_model("vgg16", num_classes=3, width_mult=0.125)
    torch.save(
        {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "ddp.pt"
    )
    state = read_state_dict(tmp_path / "ddp.pt")
    assert set(state) == set(model.state_dict())


@pytest.mark.parametrize("content", [b"hello\n", b"cifar10,0.91\n", b""])
def test_bytes_that_are_no_torch_file_are_called_that_not_a_pickled_object(tmp_path, content):
    (tmp_path / "w.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"w.pt is corrupt or not a torch file"):
        read_state_dict(tmp_path / "w.pt")


def test_a_pickled_model_object_is_refused_with_the_fix(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "object.pt")
    with pytest.raises(CheckpointError, match=r"pickled object.*model.state_dict\(\)"):
        read_state_dict(tmp_path / "object.pt")


def test_a_classifier_of_another_shape_names_both_shapes_unless_reset(tmp_path):
    hub = build_model("torchvision:resnet18", num_classes=1000, input_size=32).state_dict()
    mine = build_model("torchvision:resnet18", num_classes=10, input_size=32)
    with pytest.raises(ModelError, match=r"fc.weight has shape \(1000, 512\).*\(10, 512\).*reset_classifier=True"):
        load_weights(mine, hub, source="--weights hub.pth")
    assert load_weights(mine, hub, source="--weights hub.pth", reset_classifier=True) == ["fc.bias", "fc.weight"]
    assert torch.equal(mine.layer1[0].conv1.weight, hub["layer1.0.conv1.weight"])


def test_import_with_a_dataset_grades_it_and_later_steps_validate_on_the_test_split(tmp_path):
    source = build_model("torchvision:resnet18", num_classes=3, input_size=32)
    torch.save(source.state_dict(), tmp_path / "r18.pt")
    result = invoke(
        "import",
        "torchvision:resnet18",
        "--num-classes",
        3,
        "--weights",
        tmp_path / "r18.pt",
        "--input-size",
        32,
        "--dataset",
        "synthetic:3",
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val_source"] == "test" and 0 <= metrics["test_accuracy"] <= 1
    result = invoke(
        "measure",
        tmp_path / "run" / "model.pt",
        "--head-epochs",
        2,
        "--no-plots",
        "--device",
        "cpu",
        "--out",
        tmp_path / "m",
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m" / "measurement.json").read_text())
    assert meta["val_source"] == "test" and meta["backbone_saw_val"] is False
    assert meta["split_sizes"]["val"] + meta["split_sizes"]["test"] == 96  # synthetic:3 has 32 test images per label
    assert meta["split_sizes"]["train"] == 192  # every training image trains the heads


def test_pretrained_without_network_or_cache_is_one_line_naming_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = invoke("import", "torchvision:resnet18", "--num-classes", 1000, "--pretrained", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "resnet18" in result.output and "--weights" in result.output and str(tmp_path / "torch") in result.output
    assert "Traceback" not in result.output


def test_pretrained_reads_the_hub_cache_offline(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    cached = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    hub_model = torchvision.models.resnet18()
    torch.save(hub_model.state_dict(), cached)
    result = invoke(
        "import",
        "torchvision:resnet18",
        "--num-classes",
        10,
        "--pretrained",
        "--reset-classifier",
        "--input-size",
        32,
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 0, result.output
    assert "new classifier" in result.output
    imported = prune_snr.load(tmp_path / "run" / "model.pt")
    assert torch.equal(imported.layer4[1].conv2.weight, hub_model.layer4[1].conv2.weight)
    assert imported.fc.out_features == 10


def test_a_too_small_input_names_the_smallest_input_size_that_works():
    with pytest.raises(ModelError, match=r"torchvision:alexnet: inputs of 32 px are too small.*input_size=63"):
        build_model("torchvision:alexnet", num_classes=10, input_size=32)
