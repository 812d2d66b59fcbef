"""The command line, run in-process: exit codes and one-line errors."""

import json

import pytest
import yaml

from tests.command_line import invoke


def test_train_writes_model_and_metrics(tmp_path):
    result = invoke(
        "train",
        "--dataset",
        "synthetic:3",
        "--width-mult",
        "0.125",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 0, result.output
    import prune_snr
    from prune_snr.train.loop import evaluate

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    model = prune_snr.load(tmp_path / "run" / "model.pt")
    graded = evaluate(model, prune_snr.build_dataset("synthetic:3", "test"), device="cpu")["accuracy"]
    assert metrics["test_accuracy"] == pytest.approx(graded, abs=1e-6), "metrics.json grades the saved model"
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    assert f"{metrics['test_accuracy']:.4f}" in result.output and f"{metrics['params']:,}" in result.output


def test_recipe_keys_are_used_and_flags_win(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: synthetic:3\nwidth_mult: 0.125\nepochs: 5\nbatch_size: 32\ndevice: cpu\n")
    result = invoke("train", "--recipe", recipe, "--epochs", "1", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "epochs: 1" in (tmp_path / "run" / "config.yaml").read_text()


def test_train_num_labels_keeps_the_first_k_labels(tmp_path):
    import prune_snr

    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: synthetic\nwidth_mult: 0.125\nepochs: 1\nbatch_size: 32\ndevice: cpu\n")
    result = invoke("train", "--recipe", recipe, "--num-labels", "3", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "labels: 3" in (tmp_path / "run" / "config.yaml").read_text().splitlines()
    assert prune_snr.load(tmp_path / "run" / "model.pt").classifier.out_features == 3


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--model", "resnet9", "--dataset", "synthetic"], "unknown model 'resnet9'"),
        (["train", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["train", "--dataset", "synthetic", "--epochs", "-1"], "--epochs -1"),
        (["train", "--dataset", "synthetic", "--device", "tpu"], "--device 'tpu'"),
        (["train", "--dataset", "synthetic", "--labels", "3"], "train keeps the first K labels with --num-labels 3"),
        (["measure", "missing.pt", "--dataset", "synthetic"], "missing.pt does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, needle):
    result = invoke(*args, "--out", tmp_path / "out")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_bad_recipe_key_is_one_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("modle: vgg16\n")
    result = invoke("train", "--recipe", recipe, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "'modle'" in result.output


@pytest.fixture(scope="module")
def measured_run(tiny_run, tmp_path_factory):
    out, _ = tiny_run
    folder = tmp_path_factory.mktemp("measured")
    result = invoke(
        "measure",
        out / "model.pt",
        "--dataset",
        "synthetic",
        "--head-epochs",
        "3",
        "--head-lr",
        "0.02",
        "--device",
        "cpu",
        "--labels",
        "3",
        "--out",
        folder,
    )
    assert result.exit_code == 0, result.output
    MEASURE_OUTPUT[:] = [result.output]
    return out, folder


MEASURE_OUTPUT: list[str] = []  # what `measure` printed, for the table spec


def test_measure_writes_every_artifact_and_prints_the_layer_table(measured_run):
    _, folder = measured_run
    names = {p.name for p in folder.iterdir()}
    assert {
        "measurement.json",
        "fields.npz",
        "heads.pt",
        "layers.png",
        "noise.png",
        "filters.png",
        "label_sweep.png",
        "config.yaml",
    } <= names
    data = json.loads((folder / "measurement.json").read_text())
    assert (data["options"]["head_epochs"], data["options"]["head_lr"]) == (3, 0.02)
    cells = [line.replace("│", " ").split() for line in MEASURE_OUTPUT[0].splitlines()]
    rows = {c[0]: c for c in cells if c and c[0].startswith("features.")}
    assert list(rows) == [p["name"] for p in data["points"]], "one table row per measured point, in order"
    assert "(fields.npz " in MEASURE_OUTPUT[0] and "B)" in MEASURE_OUTPUT[0], "the size of fields.npz is printed"
    for point in data["points"]:
        row = rows[point["name"]]
        assert row[1:5] == [
            str(point["n_filters"]),
            f"{point['val_accuracy']:.4f}",
            f"{point['test_accuracy']:.4f}",
            f"{point['snr']:.3f}",
        ]


def test_prune_end_to_end_writes_a_loadable_pruned_model_and_report(measured_run, tmp_path):
    import prune_snr

    out, folder = measured_run
    result = invoke(
        "prune",
        out / "model.pt",
        "--target",
        "0.4",
        "--criterion",
        "snr",
        "--measurement",
        folder,
        "--finetune-epochs",
        "1",
        "--round-to",
        "1",
        "--device",
        "cpu",
        "--out",
        tmp_path / "p",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert abs(report["search"]["removed"] - 0.4) <= 0.02 and report["criterion"] == "snr"
    assert {"before", "after", "channels_before", "channels_after"} <= set(report)
    model = prune_snr.load(tmp_path / "p" / "pruned.pt")
    assert sum(p.numel() for p in model.parameters()) == report["after"]["params"]
    assert (tmp_path / "p" / "kept_channels.png").stat().st_size > 0
    resolved = yaml.safe_load((tmp_path / "p" / "config.yaml").read_text())  # the settled options: defaults filled in
    assert (resolved["dataset"], resolved["round_to"], resolved["val_fraction"]) == (
        "synthetic",
        1,
        report["val_fraction"],
    )
    again = invoke(
        "prune",
        out / "model.pt",
        "--target",
        "0.4",
        "--criterion",
        "snr",
        "--measurement",
        folder,
        "--finetune-epochs",
        "1",
        "--round-to",
        "1",
        "--device",
        "cpu",
        "--out",
        tmp_path / "p",
    )
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = invoke(
        "prune",
        out / "model.pt",
        "--target",
        "0.4",
        "--criterion",
        "snr",
        "--measurement",
        folder,
        "--finetune-epochs",
        "1",
        "--round-to",
        "1",
        "--device",
        "cpu",
        "--out",
        tmp_path / "p",
        "--resume",
    )
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((tmp_path / "p" / "report.json").read_text())["after"] == report["after"]


def test_a_split_seed_redraws_validation_from_the_held_out_images_and_prune_keeps_to_it(tiny_run, tmp_path):
    """Repeated trials vary the validation split (``--split-seed``) without validating on images
    the model trained on."""
    out, metrics = tiny_run
    runs = {}
    for seed in (1, 2):
        result = invoke(
            "measure",
            out / "model.pt",
            "--dataset",
            "synthetic",
            "--head-epochs",
            "1",
            "--device",
            "cpu",
            "--val-fraction",
            "0.05",
            "--split-seed",
            seed,
            "--no-plots",
            "--out",
            tmp_path / f"m{seed}",
        )
        assert result.exit_code == 0, result.output
        runs[seed] = json.loads((tmp_path / f"m{seed}" / "measurement.json").read_text())
        assert runs[seed]["options"]["split_seed"] == seed and runs[seed]["options"]["held_out"] == 0.1
        assert runs[seed]["backbone_saw_val"] is False
    assert [p["snr"] for p in runs[1]["points"]] != [p["snr"] for p in runs[2]["points"]]  # fields read another split
    args = (
        "prune",
        out / "model.pt",
        "--target",
        "0.3",
        "--criterion",
        "snr",
        "--measurement",
        tmp_path / "m1",
        "--finetune-epochs",
        "0",
        "--round-to",
        "1",
        "--device",
        "cpu",
    )
    refused = invoke(*args, "--split-seed", "2", "--out", tmp_path / "p2")
    assert refused.exit_code == 2 and "re-measure with --split-seed 2" in refused.output
    assert invoke(*args, "--out", tmp_path / "p1").exit_code == 0
    report = json.loads((tmp_path / "p1" / "report.json").read_text())
    assert report["split_seed"] == 1 and report["split_sizes"]["val"] == runs[1]["split_sizes"]["val"]


@pytest.mark.parametrize("target", ["0", "1", "-1", "1.5", "nan"])
def test_prune_targets_outside_zero_one_are_one_line_errors(measured_run, tmp_path, target):
    out, _ = measured_run
    result = invoke("prune", out / "model.pt", f"--target={target}", "--out", tmp_path / "p")
    assert result.exit_code == 2 and "between 0 and 1" in result.output and not (tmp_path / "p").exists()


def test_a_recipes_measurement_keys_reach_the_measurement_prune_makes_itself(tiny_run, tmp_path):
    out, _ = tiny_run
    recipe = tmp_path / "r.yaml"
    recipe.write_text("threshold: 0.4\npool: 1\nhead_epochs: 2\nfinetune_epochs: 0\ndevice: cpu\n")
    result = invoke(
        "prune", out / "model.pt", "--recipe", recipe, "--target", "0.3", "--round-to", "1", "--out", tmp_path / "p"
    )
    assert result.exit_code == 0, result.output
    options = json.loads((tmp_path / "p" / "report.json").read_text())["measurement"]["options"]
    assert (options["threshold"], options["pool"], options["head_epochs"]) == (0.4, 1, 2)
