"""Specs of the model registry and build_model: registered names, timm:*, torchvision:*, and what is refused."""

import pytest
import torch

from prune_snr.errors import ModelError
from prune_snr.models import build_model, example_input, list_models


@pytest.mark.parametrize("name", list_models() + ["timm:resnet18", "torchvision:resnet18"])
def test_every_registered_model_classifies_32px_inputs(name):
    kwargs = {"width_mult": 0.125} if name == "vgg16" else {}
    model = build_model(name, num_classes=7, **kwargs).eval()
    assert model(example_input(model, 2)).shape == (2, 7)
    rebuilt = build_model(**model.spec)
    assert type(rebuilt) is type(model)


def test_width_mult_scales_every_conv():
    model = build_model("vgg16", num_classes=10, width_mult=0.25)
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths[:2] == [16, 16] and widths[-1] == 128


@pytest.mark.parametrize("name", ["resnet", "hf-hub:foo/bar", "timm:not_a_model", "torchvision:not_a_model"])
def test_unknown_names_and_prefixes_are_refused(name):
    with pytest.raises(ModelError):
        build_model(name, num_classes=10)


def test_width_mult_is_refused_where_it_does_not_apply():
    with pytest.raises(ModelError, match="width"):
        build_model("efficientnet_b0", num_classes=10, width_mult=0.5)


def test_the_models_modules_import_each_other_at_the_top_without_a_cycle():
    """The registry imports nothing of the package; no module hides a cycle behind an import inside a function."""
    import ast
    from graphlib import TopologicalSorter
    from pathlib import Path

    import prune_snr.models

    folder = Path(prune_snr.models.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        local = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level and id(n) not in top]
        assert not local, f"{path.name}:{local[0].lineno}: a package import inside a function"
        graph[path.stem] = {
            n.module or alias.name
            for n in tree.body
            if isinstance(n, ast.ImportFrom) and n.level == 1
            for alias in n.names
        } - {"__init__"}
    assert not graph["registry"], "the registry imports nothing of its package"
    del graph["__init__"]
    tuple(TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
