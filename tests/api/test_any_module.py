"""Specs of the library API on models and data prune-snr never built: the user's own class, a torchvision
instance and a timm instance, the user's DataLoaders and fine-tuning, save/load in a fresh process, export."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import prune_snr
from prune_snr.errors import ConfigError, DataError
from tests.user_models import UserNet

ROOT = Path(__file__).resolve().parents[2]
BUILDERS = {  # name -> (the code that builds the unpruned instance, in this process and in a fresh one; image shape)
    "user class": ("from tests.user_models import UserNet; model = UserNet(width=16)", (1, 16, 16)),
    "torchvision": ("import torchvision; model = torchvision.models.resnet18(num_classes=10)", (3, 32, 32)),
    "timm": ("import timm; model = timm.create_model('mobilenetv3_small_050', num_classes=10)", (3, 32, 32)),
}


def build(name: str) -> torch.nn.Module:
    scope: dict = {}
    torch.manual_seed(0)
    exec(BUILDERS[name][0], scope)  # the same line the fresh process runs
    return scope["model"]


def learnable(shape, n: int, seed: int) -> TensorDataset:
    """Images whose brightness says the label, with noise: heads and fine-tuning have something to learn."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    return TensorDataset(torch.randn(n, *shape, generator=g) * 0.5 + y[:, None, None, None] / 5.0, y)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n != "user class" else []) for n in BUILDERS]
)
def test_any_module_measures_prunes_with_the_users_finetune_saves_reloads_in_a_fresh_process_and_exports(
    name, tmp_path
):
    model = build(name)
    shape = BUILDERS[name][1]
    train = DataLoader(learnable(shape, 300, 0), batch_size=50, shuffle=True)
    test = DataLoader(learnable(shape, 100, 1), batch_size=50)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measurement = prune_snr.measure(model, train=train, test=test, head_epochs=2, device="cpu")
    assert measurement.points and all(p["val_accuracy"] is not None for p in measurement.points)
    calls = []

    def finetune(pruned):
        calls.append(type(pruned))
        optimizer = torch.optim.SGD(pruned.parameters(), lr=0.01)
        pruned.train()
        for images, labels in train:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(pruned(images), labels).backward()
            optimizer.step()

    slim, report = prune_snr.prune(
        model,
        train=train,
        test=test,
        target=0.5,
        metric="macs",
        measurement=measurement,
        finetune=finetune,
        round_to=1,
        device="cpu",
    )
    assert calls == [type(model)] and type(slim) is type(model)
    assert abs(report["after"]["macs"] / report["before"]["macs"] - 0.5) <= 0.02, "MACs within the landing rule"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the model handed in is unchanged"

    prune_snr.save(slim, tmp_path / "slim.pt")
    x = torch.randn(4, *shape)
    torch.save(x, tmp_path / "x.pt")
    fresh = (
        f"import torch, prune_snr; {BUILDERS[name][0]}; "
        f"slim = prune_snr.load({str(tmp_path / 'slim.pt')!r}, model=model); "
        f"torch.save(slim(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})"
    )
    subprocess.run([sys.executable, "-c", fresh], cwd=ROOT, check=True, timeout=300)
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt"), slim.eval()(x))

    exported = prune_snr.export(slim, tmp_path / "slim.onnx", example_input=x[:1])
    with torch.no_grad():
        scale = slim.eval()(x).abs().max().item()
    assert exported["batch_8_max_abs_diff"] <= 1e-4 + 1e-3 * scale  # export's own rule: atol 1e-4, rtol 1e-3


def test_the_subpackages_hold_their_functions_beside_the_top_level_names():
    from prune_snr.export import export
    from prune_snr.measure import measure
    from prune_snr.prune import prune

    assert (export, measure, prune) == (prune_snr.export, prune_snr.measure, prune_snr.prune)


def test_bad_user_data_is_one_line_naming_what_was_seen():
    model = UserNet()
    good = learnable((1, 16, 16), 20, 0)
    with pytest.raises(DataError, match="items are dicts"):
        prune_snr.measure(model, train=[{"image": torch.zeros(1, 16, 16), "label": 0}], test=good)
    with pytest.raises(DataError, match=r"images of shape \(16, 16\)"):
        prune_snr.measure(model, train=TensorDataset(torch.zeros(4, 16, 16), torch.zeros(4).long()), test=good)
    with pytest.raises(DataError, match=r"labels 0\.\.12 but the classifier has 10 outputs"):
        prune_snr.prune(model, train=TensorDataset(torch.zeros(4, 1, 16, 16), torch.tensor([0, 1, 2, 12])), test=good)
    with pytest.raises(DataError, match="train= and test="):
        prune_snr.measure(model, train=good)


def test_a_finetune_that_returns_something_else_than_a_module_is_refused():
    model = UserNet()
    data = learnable((1, 16, 16), 60, 0)
    with pytest.raises(ConfigError, match="finetune= returned a float"):
        prune_snr.prune(
            model,
            train=data,
            test=data,
            target=0.3,
            metric="macs",
            criterion="l1",
            allocation="uniform",
            finetune=lambda m: 0.5,
            round_to=1,
            device="cpu",
        )


def test_a_pruned_run_file_of_a_user_model_loads_into_its_instance(tmp_path):
    model = UserNet()
    data = learnable((1, 16, 16), 60, 0)
    slim, _ = prune_snr.prune(
        model,
        train=data,
        test=data,
        target=0.3,
        metric="macs",
        criterion="l1",
        allocation="uniform",
        finetune_epochs=0,
        round_to=1,
        device="cpu",
        out=tmp_path / "run",
    )
    back = prune_snr.load(tmp_path / "run" / "pruned.pt", model=UserNet())
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(back(x), slim.eval()(x))


def test_a_classifier_the_user_names_is_the_one_kept_whole():
    class TwoHeads(torch.nn.Module):  # the logits come from `logits`; `aux` is a Linear registered after it
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
            )
            self.logits = torch.nn.Linear(16, 10)
            self.aux = torch.nn.Linear(16, 3)

        def forward(self, x):
            return self.logits(self.body(x))

    data = learnable((1, 16, 16), 60, 0)
    with pytest.raises(prune_snr.errors.ModelError, match="classifier 'aux' has 3 outputs but the model returns 10"):
        prune_snr.prune(TwoHeads(), train=data, test=data, target=0.3)
    slim, _ = prune_snr.prune(
        TwoHeads(),
        train=data,
        test=data,
        target=0.3,
        metric="macs",
        criterion="l1",
        allocation="uniform",
        classifier="logits",
        finetune_epochs=0,
        round_to=1,
        device="cpu",
    )
    assert slim.logits.out_features == 10 and slim.body[0].out_channels < 16
    with pytest.raises(prune_snr.errors.ModelError, match="classifier='head'"):
        prune_snr.measure(TwoHeads(), train=data, test=data, classifier="head")


def test_search_runs_a_study_on_the_users_model_and_data(tmp_path):
    data = learnable((1, 16, 16), 120, 0)
    study = prune_snr.search(
        UserNet(),
        train=data,
        test=data,
        trials=2,
        out=tmp_path / "study",
        space="torch-pruning",
        round_to=1,
        device="cpu",
    )
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(finished) == 2 and all(0 < t.values[1] < 1 for t in finished), [
        t.user_attrs.get("error") for t in study.trials
    ]
    assert (tmp_path / "study" / "study.db").is_file()


def test_a_saved_pruned_model_of_prune_snrs_own_loads_by_name_without_an_instance(tmp_path):
    import torch_pruning as tp

    from prune_snr.models import build_model, example_input

    model = build_model("vgg16", num_classes=10, width_mult=0.125)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input(model))
    conv = (
        model.features.conv3.conv
        if hasattr(model.features.conv3, "conv")
        else [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][2]
    )
    graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=[0, 1]).prune()
    prune_snr.save(model, tmp_path / "slim.pt")
    back = prune_snr.load(tmp_path / "slim.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x), model.eval()(x))


def test_one_hot_labels_are_refused_in_one_line():
    data = TensorDataset(torch.zeros(4, 1, 16, 16), torch.eye(10)[:4])
    with pytest.raises(DataError, match="40 labels for 4 images"):
        prune_snr.measure(UserNet(), train=data, test=data)


def test_a_preset_given_in_a_base_config_applies_where_the_base_keeps_the_defaults():
    from prune_snr.config import MeasureConfig, resolve

    cfg = resolve(MeasureConfig, base=MeasureConfig(preset="paper", head_lr=0.05))
    assert (cfg.head_optimizer, cfg.fields_split, cfg.head_lr) == ("sgd", "test", 0.05)


def test_a_loader_whose_sampler_or_collate_fn_the_stages_would_drop_is_refused():
    from torch.utils.data import IterableDataset, SubsetRandomSampler

    model, good = UserNet(), learnable((1, 16, 16), 20, 0)
    with pytest.raises(DataError, match=r"its own sampler \(SubsetRandomSampler\).*Subset\(dataset, indices\)"):
        prune_snr.measure(model, train=DataLoader(good, sampler=SubsetRandomSampler(range(10))), test=good)
    with pytest.raises(DataError, match=r"its own sampler \(SubsetRandomSampler\)"):  # inside a batch sampler
        batches = torch.utils.data.BatchSampler(SubsetRandomSampler(range(10)), 2, False)
        prune_snr.measure(model, train=DataLoader(good, batch_sampler=batches), test=good)
    with pytest.raises(DataError, match=r"its own sampler \(RandomSampler\)"):  # 3 draws, not every item
        prune_snr.measure(
            model, train=DataLoader(good, sampler=torch.utils.data.RandomSampler(good, num_samples=3)), test=good
        )
    with pytest.raises(DataError, match="its own collate_fn"):
        prune_snr.measure(model, train=DataLoader(good, collate_fn=lambda batch: batch), test=good)

    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(1, 16, 16), 0

    with pytest.raises(DataError, match="map-style torch Dataset"):
        prune_snr.measure(model, train=DataLoader(Stream()), test=good)
    with pytest.raises(DataError, match=r"images are numpy\.ndarray of shape \(1, 16, 16\), not torch tensors"):
        prune_snr.measure(model, train=[(x.numpy(), int(y)) for x, y in good], test=good)
    # a plain loader (shuffled, batched) is its dataset
    assert (
        prune_snr.prune(
            model,
            train=DataLoader(good, batch_size=4, shuffle=True),
            test=good,
            criterion="l1",
            target=0.3,
            round_to=1,
            finetune_epochs=0,
            device="cpu",
        )[1]["split_sizes"]["train"]
        > 0
    )


def test_a_model_that_cannot_read_its_data_or_gives_no_logits_says_so_in_one_line():
    good = learnable((1, 16, 16), 20, 0)
    with pytest.raises(prune_snr.errors.ModelError, match=r"cannot read train='s images \(1x16x16 float32\)"):
        prune_snr.measure(UserNet(in_chans=3), train=good, test=good)
    with pytest.raises(prune_snr.errors.ModelError, match=r"cannot read .*float32\): RuntimeError: .*Double"):
        prune_snr.prune(UserNet().double(), train=good, test=good, target=0.3)

    class Dict(UserNet):
        def forward(self, x):
            return {"logits": super().forward(x)}

    with pytest.raises(prune_snr.errors.ModelError, match="returns a dict, not a tensor of logits"):
        prune_snr.prune(Dict(), train=good, test=good, target=0.3)


def test_measure_refuses_a_classifier_with_labels_its_training_data_never_shows():
    four = TensorDataset(torch.randn(40, 1, 16, 16), torch.arange(40) % 4)
    with pytest.raises(DataError, match=r"no image of label\(s\) 4, 5, 6, 7, 8, 9 among the classifier's 10"):
        prune_snr.measure(UserNet(num_classes=10), train=four, test=four)


def test_plain_datasets_as_a_pair_are_measured_as_train_and_test():
    data = learnable((1, 16, 16), 60, 0)
    model = UserNet()
    as_pair = prune_snr.measure(model, (data, data), head_epochs=1, device="cpu")
    as_keywords = prune_snr.measure(model, train=data, test=data, head_epochs=1, device="cpu")
    assert [p["snr"] for p in as_pair.points] == [p["snr"] for p in as_keywords.points]
    assert model.training, "measure hands the model back in its mode"
    model.stem[1].eval()  # a frozen BatchNorm stays frozen
    prune_snr.measure(model, train=data, test=data, head_epochs=1, device="cpu")
    assert model.training and not model.stem[1].training


def test_search_pins_a_searched_parameter_given_as_an_option_and_takes_the_classifier(tmp_path):
    data = learnable((1, 16, 16), 60, 0)
    options = dict(train=data, test=data, space="torch-pruning", round_to=1, device="cpu")
    study = prune_snr.search(
        UserNet(), trials=2, out=tmp_path / "a", target=0.3, criterion="l1", finetune_epochs=0, **options
    )
    assert [(t.params["target"], t.params["criterion"], t.params["finetune_epochs"]) for t in study.trials] == [
        (0.3, "l1", 0)
    ] * 2
    with pytest.raises(ConfigError, match=r"target pinned twice \(0\.3, then 0\.5"):
        prune_snr.search(UserNet(), trials=1, out=tmp_path / "b", target=0.3, fix="target=0.5", **options)

    class ConvHead(UserNet):  # a spare Linear after the real classifier: classifier= names the real one
        def __init__(self):
            super().__init__()
            self.spare = torch.nn.Linear(4, 3)

    with pytest.raises(prune_snr.errors.ModelError, match="classifier 'spare' has 3 outputs"):
        prune_snr.search(ConvHead(), trials=1, out=tmp_path / "c", **options)
    study = prune_snr.search(
        ConvHead(), trials=1, out=tmp_path / "d", classifier="head", target=0.3, finetune_epochs=0, **options
    )
    assert study.trials[0].state.name == "COMPLETE", study.trials[0].user_attrs.get("error")


def test_a_finetune_function_replaces_the_built_in_loop_and_the_report_says_so():
    data = learnable((1, 16, 16), 60, 0)
    options = dict(train=data, test=data, target=0.3, criterion="l1", round_to=1, device="cpu")

    def my_finetune(model):
        return None

    with pytest.raises(ConfigError, match="finetune_epochs= sets the built-in fine-tuning, which finetune= replaces"):
        prune_snr.prune(UserNet(), finetune=my_finetune, finetune_epochs=5, **options)
    _, report = prune_snr.prune(UserNet(), finetune=my_finetune, **options)
    assert report["finetune_callback"].endswith("<locals>.my_finetune")
    assert "finetune_epochs" not in report and "finetune_lr" not in report


def test_without_fine_tuning_the_pruned_model_is_graded_once(monkeypatch):
    from prune_snr.prune import report as reports

    data = learnable((1, 16, 16), 60, 0)
    passes = []
    evaluate = reports.evaluate

    def counted(model, dataset, **kwargs):
        passes.append(len(dataset))
        return evaluate(model, dataset, **kwargs)

    monkeypatch.setattr(reports, "evaluate", counted)
    _, report = prune_snr.prune(
        UserNet(),
        train=data,
        test=data,
        target=0.3,
        criterion="l1",
        finetune_epochs=0,
        bn_recalibrate=0,
        round_to=1,
        device="cpu",
    )
    assert len(passes) == 4, passes  # the original and the pruned model, each on validation and test
    assert report["after"] == report["pruned_before_finetune"]


def test_a_resumed_run_grades_the_model_it_resumed_even_without_more_epochs(tmp_path):
    data = learnable((1, 16, 16), 60, 0)
    options = dict(train=data, test=data, target=0.3, criterion="l1", round_to=1, device="cpu", out=tmp_path / "run")
    tuned, first = prune_snr.prune(UserNet(), finetune_epochs=1, finetune_lr=0.05, **options)
    _, again = prune_snr.prune(UserNet(), finetune_epochs=0, resume=True, **options)
    assert again["after"] == first["after"] != first["pruned_before_finetune"]


def test_a_measurement_of_other_weights_is_refused():
    data = learnable((1, 16, 16), 60, 0)
    torch.manual_seed(0)
    measured, other = UserNet(), UserNet()
    measurement = prune_snr.measure(measured, train=data, test=data, head_epochs=1, device="cpu")
    options = dict(train=data, test=data, target=0.3, criterion="snr", finetune_epochs=0, round_to=1, device="cpu")
    with pytest.raises(ConfigError, match=r"made of other weights than this model's \(digest [0-9a-f]{16}"):
        prune_snr.prune(other, measurement=measurement, **options)
    assert prune_snr.prune(measured, measurement=measurement, **options)[1]["after"]["params"] > 0
