"""Specs: an option is declared once, in its config field; the command line, the report and the
resume checks read it."""

import dataclasses
from typing import Optional

import typer
from typer.testing import CliRunner

from prune_snr import choices
from prune_snr.cli import app
from prune_snr.cli.flags import takes
from prune_snr.config import MeasureConfig, PruneConfig, TrainConfig, flag_of, option


@dataclasses.dataclass(frozen=True)
class Toy:
    threshold: float = option(0.3, "θ for clusters and noise.")
    clusters: str = option(choices.CLUSTERS.default, "What a cluster is:", choices=choices.CLUSTERS)
    sweep: Optional[list[int]] = option(None, "Label counts.", flag="--labels")
    plots: bool = option(True, "Write figures.")
    internal: Optional[float] = option(None, cli=False)


def toy_app(seen: dict) -> typer.Typer:
    toy = typer.Typer()

    @toy.command()
    @takes(Toy, recipe=False)
    def run(name: str, *, options: dict) -> None:
        seen.update(options, name=name)

    @toy.command()
    def other() -> None:  # two commands, so typer keeps the command's name
        pass

    return toy


def test_a_field_is_a_flag_with_its_help_choices_and_default_and_the_command_gets_what_was_given():
    seen = {}
    runner = CliRunner()
    shown = runner.invoke(toy_app(seen), ["run", "--help"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    for needle in (
        "--threshold",
        "θ for clusters and noise.",
        "0.3",
        "--clusters",
        "components",
        "--labels",
        "--plots",
        "--no-plots",
    ):
        assert needle in text, needle
    assert "--internal" not in text, "a value the tool sets itself is no flag"
    done = runner.invoke(toy_app(seen), ["run", "x", "--threshold", "0.4", "--labels", "3,5", "--no-plots"])
    assert done.exit_code == 0, done.output
    assert seen == {"name": "x", "threshold": 0.4, "sweep": "3,5", "plots": False}, (
        "only the flags given, under their config keys"
    )


def test_every_option_of_measure_and_prune_is_a_flag_spelled_and_explained_by_its_field():
    import typer.main

    commands = typer.main.get_command(app).commands
    for name, config, nested in (
        ("measure", MeasureConfig, ()),
        ("prune", PruneConfig, (PruneConfig.__dataclass_fields__["finetune"],)),
    ):
        params = {opt: p for p in commands[name].params for opt in getattr(p, "opts", [])}
        fields = [
            f
            for f in dataclasses.fields(config)
            if not dataclasses.is_dataclass(f.type)
            and f.metadata.get("cli", True)
            and f.name not in ("finetune", "measure")
        ]
        fields += [f for n in nested for f in dataclasses.fields(n.default_factory())]
        for f in fields:
            flag = flag_of(f).split("/")[0]
            assert flag in params, f"{name}: {f.name} has no flag {flag}"
            assert params[flag].help == f.metadata["help"], f"{name} {flag}: the help is the field's"


def test_a_resumed_training_checks_the_options_its_fields_mark_as_changing_the_result():
    from prune_snr.train.run_folder import _RESULT_KEYS

    marked = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("result")}
    assert set(_RESULT_KEYS) == marked and {"lr", "epochs", "seed", "val_fraction"} <= marked
    assert "device" not in marked and "workers" not in marked, "where it runs does not change the result"
