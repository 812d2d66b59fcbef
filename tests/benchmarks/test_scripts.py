"""The benchmark scripts run end to end on the tiny model and docs/results.md is built from
what they wrote (never typed by hand)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import prune_snr
from prune_snr.measure import measure

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def script(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def measured(tiny_run, tmp_path_factory):
    out, _ = tiny_run
    folder = tmp_path_factory.mktemp("bench") / "measurement"
    measure(prune_snr.load(out / "model.pt"), "synthetic", head_epochs=3, label_sweep=[2, 3, 4, 5], device="cpu").save(
        folder
    )
    return out / "model.pt", folder


def test_reproduce_trends_writes_a_report_with_a_verdict_per_finding(measured, tmp_path):
    checkpoint, folder = measured
    assert script("reproduce_trends").main([str(checkpoint), "--measurement", str(folder), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "trends.md").read_text()
    rows = json.loads((tmp_path / "trends.json").read_text())["rows"]
    assert rows[0]["sweep"]["labels"] == [2, 3, 4, 5] and "r2" in rows[0]["sweep"]
    assert "rises?" in text and "Where this data agrees and disagrees" in text
    assert (tmp_path / "trends_depth.png").stat().st_size > 0 and (
        tmp_path / "trends_label_sweep.png"
    ).stat().st_size > 0


def test_the_readme_results_section_is_generated_from_benchmark_outputs(measured, tmp_path):
    checkpoint, folder = measured
    results = tmp_path / "results"
    args = [
        str(checkpoint),
        "--measurement",
        str(folder),
        "--criteria",
        "l1,snr",
        "--allocations",
        "uniform,measured",
        "--budgets",
        "0.3",
        "--seeds",
        "0",
        "--finetune-epochs",
        "0",
        "--round-to",
        "1",
        "--device",
        "cpu",
    ]
    assert script("saliency_compare").main([*args, "--out", str(results / "fair_seeds")]) == 0
    rows = json.loads((results / "fair_seeds" / "results.json").read_text())["rows"]
    assert {(r["allocation"], r["criterion"]) for r in rows} == {
        ("uniform", "l1"),
        ("uniform", "snr"),
        ("measured", "l1"),
        ("measured", "snr"),
    }
    script("reproduce_trends").main(
        [str(checkpoint), "--measurement", str(folder), "--out", str(results / "trends_draws")]
    )
    run = json.loads((folder / "measurement.json").read_text())
    (results / "measure_run_tiny.json").write_text(json.dumps(run))
    readme = tmp_path / "results.md"
    readme.write_text("# x\n\n<!-- results:start -->\nstale\n<!-- results:end -->\n")
    assert script("readme_results").main([str(results), str(readme)]) == 0
    text = readme.read_text()
    assert (
        "stale" not in text
        and "measurement-driven" in text
        and "each chosen on validation" in text
        and "paper's trends" in text
    )
    best = max(r["after"] for r in rows)
    assert f"{best:.4f}" in text
    budget = run["options"]["memory_budget_gib"]
    assert f"**peak RSS {run['timings']['peak_rss_mb']:,.0f} MB** against a memory budget of {budget} GiB" in text


def test_search_compare_scores_both_arms_fronts_by_hypervolume(measured, tmp_path):
    checkpoint, folder = measured
    args = [
        str(checkpoint),
        "--measurement",
        str(folder),
        "--trials",
        "2",
        "--proxy",
        "0.5",
        "--max-finetune-epochs",
        "0",
        "--seeds",
        "0,1",
        "--round-to",
        "1",
        "--device",
        "cpu",
        "--reference",
        "0.0,1.0",
        "--out",
        str(tmp_path),
    ]
    assert script("search_compare").main(args) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert sorted((r["arm"], r["seed"]) for r in rows) == [
        ("full", 0),
        ("full", 1),
        ("torch-pruning", 0),
        ("torch-pruning", 1),
    ]
    for r in rows:  # one Pareto point of accuracy a and kept k spans a * (1 - k) against the (0, 1) reference
        if len(r["pareto"]) == 1:
            (p,) = r["pareto"]
            assert r["hv_macs"] == pytest.approx(p["accuracy"] * (1 - p["macs_kept"]))
        assert 0 < r["hv_macs"] <= 1 and 0 < r["hv_params"] <= 1 and 0 < r["val_hv_macs"] <= 1
    table = (tmp_path / "table.md").read_text()
    assert (
        "HV (MACs kept) (this study's objective): full − torch-pruning: val " in table
        and "a win needs both splits" in table
    )
    assert (tmp_path / "fronts.png").stat().st_size > 0
    assert rows[0]["measurement_seconds"] > 0 and rows[-1]["measurement_seconds"] == 0


def test_a_front_wins_only_beyond_the_seed_noise_on_validation_and_on_test():
    from argparse import Namespace

    table = script("search_compare").table
    args = Namespace(trials=10, proxy=0.1, max_finetune_epochs=1, metric="params", seeds="0,1,2")

    def rows(full_val, full_test):
        out = []
        for seed, noise in enumerate([0.000, 0.002, -0.002]):
            for arm, val, test in (("full", full_val, full_test), ("torch-pruning", 0.05, 0.05)):
                out.append(
                    {
                        "arm": arm,
                        "seed": seed,
                        "trial_seconds": 1.0,
                        "measurement_seconds": 0.0,
                        "hv_macs": 0.05 + noise,
                        "val_hv_macs": 0.05 + noise,
                        "hv_params": test + noise,
                        "val_hv_params": val + noise,
                    }
                )
        return out

    lines = "\n".join(table(rows(0.08, 0.08), args, (0.8, 1.0)))
    assert "HV (params kept) (this study's objective)" in lines and "HV (MACs kept):" in lines
    assert lines.count("**win**") == 1 and lines.count("**no significant difference**") == 1, (
        "params plane wins, MACs ties"
    )
    one_split = "\n".join(table(rows(0.05, 0.08), args, (0.8, 1.0)))
    assert "-> win" in one_split and "**win**" not in one_split, "a front better on test only has not won"


def test_reproduce_trends_repeats_the_sweep_over_random_label_draws(measured, tmp_path):
    checkpoint, folder = measured
    args = [
        str(checkpoint),
        "--measurement",
        str(folder),
        "--labels",
        "3,4",
        "--label-seeds",
        "0,1",
        "--head-epochs",
        "2",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    ]
    assert script("reproduce_trends").main(args) == 0
    draws = json.loads((tmp_path / "trends.json").read_text())["rows"][0]["draws"]
    assert draws["labels"] == [3, 4] and draws["draws"] == 2
    assert draws["label_ids"][0] != draws["label_ids"][1], "each seed draws its own labels"
    assert draws["cluster_size_over_k"]["mean"] == pytest.approx(
        [s / k for s, k in zip(draws["cluster_size"]["mean"], [3, 4])]
    )
    assert draws["cluster_size_range"] >= 1 and "What K ≤ 10 cannot decide" in (tmp_path / "trends.md").read_text()
    saved = sorted(p.name for p in tmp_path.glob("draw_*.json"))
    assert len(saved) == 2
    stamp = [p.stat().st_mtime_ns for p in sorted(tmp_path.glob("draw_*.json"))]
    assert script("reproduce_trends").main(args) == 0
    assert [p.stat().st_mtime_ns for p in sorted(tmp_path.glob("draw_*.json"))] == stamp, (
        "a rerun reuses finished draws"
    )


def test_arm_suffixes_combine_into_prune_options():
    split_arm = script("saliency_compare").split_arm
    assert split_arm("uniform") == ("uniform", {})
    assert split_arm("uniform+depth") == ("uniform", {"truncate": True, "cut": "budget"})
    assert split_arm("measured+truncate+remeasure") == (
        "measured",
        {"truncate": True, "cut": "measured", "iterative_steps": 2, "remeasure": True},
    )
    assert split_arm("gain-per-mac+drop") == ("gain-per-mac", {"drop_blocks": True})


def test_the_readme_lists_every_droppable_block_of_a_drop_blocks_report(tmp_path):
    from prune_snr.models import build_model, droppable_blocks
    from prune_snr.prune import prune

    model = build_model("timm:resnet18", num_classes=10).eval()
    _, report = prune(
        model,
        "synthetic",
        target=0.3,
        metric="macs",
        criterion="l1",
        allocation="uniform",
        drop_blocks=True,
        delta=1.0,
        round_to=1,
        finetune_epochs=0,
        device="cpu",
    )
    (tmp_path / "blocks_resnet18.json").write_text(json.dumps(report.to_json()))
    text = "\n".join(script("readme_results").blocks_section(tmp_path))
    assert all(f"| {block} |" in text for block in droppable_blocks(build_model("timm:resnet18", num_classes=10)))
    assert report["blocks"]["dropped"] and f"Dropped: **{', '.join(report['blocks']['dropped'])}**" in text
    assert f"**{report['after']['accuracy']:.4f}**" in text


def _cell(allocation, criterion, seed, val, test, params=0.5, macs=0.5):
    return {
        "budget": 0.5,
        "allocation": allocation,
        "criterion": criterion,
        "seed": seed,
        "val_after": val,
        "after": test,
        "params_kept": params,
        "macs_kept": macs,
    }


def test_each_side_s_best_arm_is_chosen_on_validation_and_a_win_needs_both_splits():
    compare = script("saliency_compare").compare
    rows = []
    for seed, noise in enumerate([0.000, 0.001, -0.001, 0.0005, -0.0005]):
        rows.append(_cell("measured", "l1", seed, 0.900 + noise, 0.930 + noise))  # best driven on test, not on val
        rows.append(_cell("measured", "snr", seed, 0.910 + noise, 0.905 + noise))  # best driven on val
        rows.append(_cell("uniform", "l1", seed, 0.905 + noise / 2, 0.900 - noise / 3))
    c = compare(rows, 0.5, "macs")
    assert c["driven"] == ("measured", "snr"), "the driven side's arm is the best on validation, whatever test says"
    assert c["val"]["verdict"] == "win" and c["val"]["paired_95"][0] > 0
    assert c["test"]["verdict"] == "win" and c["verdict"] == "win"
    flipped = [dict(r, after=0.9 if r["allocation"] == "measured" else 0.95) for r in rows]
    assert compare(flipped, 0.5, "macs")["verdict"] == "no significant difference", "val wins, test loses: no verdict"


def test_an_arm_the_measurement_did_not_act_on_is_no_contender_against_its_twin():
    compare = script("saliency_compare").compare
    rows = []
    for seed in range(3):
        rows.append(_cell("uniform+depth", "l1", seed, 0.90 + 0.001 * seed, 0.89))
        rows.append(
            _cell("uniform+deeper", "l1", seed, 0.90 + 0.001 * seed, 0.89)
        )  # took the budget's own cut: the same model
        rows.append(_cell("measured", "l1", seed, 0.88 + 0.002 * seed, 0.87))
    c = compare(rows, 0.5, "macs")
    assert c["driven"] == ("measured", "l1"), "the best arm where the measurement acts, not the twin of a baseline"
    assert c["inert"] == {("uniform+deeper", "l1"): ("uniform+depth", "l1")}
    assert c["val"]["diff"] < 0


def test_an_arm_that_stops_short_of_the_budget_is_no_contender_at_it():
    compare = script("saliency_compare").compare
    rows = [
        _cell(a, "l1", seed, v + 0.001 * seed, v + 0.001 * seed, macs=m)
        for seed in range(3)
        for a, v, m in (("measured", 0.95, 0.70), ("uniform+truncate", 0.91, 0.52), ("uniform", 0.90, 0.50))
    ]
    c = compare(rows, 0.5, "macs")
    assert c["missed"] == {("measured", "l1"): pytest.approx(0.70)}, "0.70 of the MACs kept where 0.5 is the budget"
    assert c["driven"] == ("uniform+truncate", "l1"), "0.52 is within 10 % of the budget: a contender"


def test_a_win_bought_with_the_other_size_metric_is_not_comparable():
    compare = script("saliency_compare").compare
    rows = [
        _cell(a, "l1", seed, v + 0.001 * seed, v + 0.001 * seed, macs=m)
        for seed in range(3)
        for a, v, m in (("measured", 0.92, 0.70), ("uniform", 0.90, 0.50))
    ]
    c = compare(rows, 0.5, "params")
    assert c["verdict"].startswith("not comparable") and "40% more macs" in c["verdict"]


def test_a_fair_cell_without_a_shared_measurement_varies_heads_split_and_classifier_training_with_the_seed(
    tiny_run, tmp_path
):
    out, _ = tiny_run
    args = [
        str(out / "model.pt"),
        "--criteria",
        "l1",
        "--allocations",
        "uniform,uniform+depth",
        "--budgets",
        "0.3",
        "--seeds",
        "0,1",
        "--finetune-epochs",
        "0",
        "--round-to",
        "1",
        "--refit-epochs",
        "2",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    ]
    assert script("saliency_compare").main(args) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    metas = [json.loads((tmp_path / "measurements" / f"seed_{s}" / "measurement.json").read_text()) for s in (0, 1)]
    assert [m["options"]["split_seed"] for m in metas] == [0, 1] and [m["seed"] for m in metas] == [0, 1]
    assert {r["split_seed"] for r in rows} == {0, 1} and all(r["refit_epochs_used"] for r in rows)
    assert "varies the measurement's heads, the validation split" in (tmp_path / "table.md").read_text()


def test_the_measured_cut_and_each_saliency_are_judged_against_their_own_rival_on_both_splits():
    contrasts = script("saliency_compare").contrasts
    rows = []
    for seed, noise in enumerate([0.000, 0.001, -0.001, 0.0005, -0.0005]):
        rows.append(_cell("uniform+truncate", "l1", seed, 0.910 + noise, 0.915 + noise, params=0.18))
        rows.append(_cell("uniform+depth", "l1", seed, 0.900 + noise / 2, 0.905 - noise / 3, params=0.08))
        rows.append(_cell("uniform", "snr", seed, 0.900 + noise, 0.899 + noise))
        rows.append(_cell("uniform", "l1", seed, 0.901 - noise, 0.900 - noise))
    by_question = {q["question"]: q for q in contrasts(rows, 0.5, "macs")}
    cut = by_question["where to cut (measured vs budget-only cut)"]
    assert cut["a"] == ("uniform+truncate", "l1") and cut["b"] == ("uniform+depth", "l1")
    assert cut["verdict"].startswith("not comparable") and "125% more params" in cut["verdict"], (
        "a win bought with params"
    )
    snr = by_question["which filters (snr vs l1)"]
    assert snr["b"] == ("uniform", "l1") and snr["verdict"] == "no significant difference"
    even = [dict(r, params_kept=0.1) for r in rows]
    assert {q["question"]: q for q in contrasts(even, 0.5, "macs")}["where to cut (measured vs budget-only cut)"][
        "verdict"
    ] == "win"


def test_two_cells_are_compared_on_the_seeds_both_have():
    judge = script("saliency_compare").judge
    many = [_cell("uniform", "l1", seed, 0.90 + 0.001 * seed, 0.90 + 0.001 * seed) for seed in range(10)]
    few = [_cell("uniform", "snr", seed, 0.90 + 0.001 * seed, 0.90 + 0.001 * seed) for seed in range(3)]
    j = judge(few, many)
    assert j["n"] == (3, 3) and abs(j["test"]["diff"]) < 1e-12, (
        "seeds 3-9 of the larger cell are other draws, not compared"
    )


def test_a_win_on_one_split_and_nothing_on_the_other_is_no_significant_difference_whatever_the_sizes():
    judge = script("saliency_compare").judge
    noise = [0.000, 0.001, -0.001, 0.0005, -0.0005]
    a = [_cell("uniform+truncate", "l1", s, 0.900 + 3 * n, 0.915 + n, params=0.18) for s, n in enumerate(noise)]
    b = [_cell("uniform+depth", "l1", s, 0.900 - 3 * n, 0.905 + n / 2, params=0.08) for s, n in enumerate(noise)]
    j = judge(a, b)
    assert j["test"]["verdict"].startswith("not comparable") and j["val"]["verdict"] == "no significant difference"
    assert j["verdict"] == "no significant difference", "not comparable needs the same win on both splits"


def test_one_shot_cells_grade_the_unpruned_model_once_per_validation_rows_and_leave_prune_as_it_was(monkeypatch):
    from types import SimpleNamespace

    from prune_snr.prune import pipeline, report

    graded = []
    monkeypatch.setattr(
        report, "sized_and_graded", lambda model, splits, device: graded.append(1) or {"n": len(graded)}
    )
    stages, model = pipeline.BEFORE_FINETUNE, torch.nn.Conv2d(1, 2, 1)

    def ctx(indices):
        val = torch.utils.data.Subset(list(range(10)), indices)
        return SimpleNamespace(splits=SimpleNamespace(val=val, test=list(range(5))), cfg=SimpleNamespace(device="cpu"))

    with script("oneshot_curves").grade_original_once("model.pt"):
        first = pipeline.BEFORE_FINETUNE[0]
        parts = [first(ctx(indices), model)[1]["before"] for indices in ([0, 1, 2], [0, 1, 2], [3, 4, 5])]
    assert parts == [{"n": 1}, {"n": 1}, {"n": 2}], "graded once per validation rows, again for other rows"
    assert pipeline.BEFORE_FINETUNE is stages, "prune grades every run again after the block"


def test_one_shot_areas_read_only_the_seeds_that_hold_every_cell():
    oneshot = script("oneshot_curves")

    def row(arm, kept, seed, acc):
        return {"arm": arm, "kept": kept, "seed": seed, "val": acc, "test": acc, "macs_kept": kept, "params_kept": kept}

    rows = [row(a, k, s, k + (0.1 if a == "l1" else 0)) for s in (0, 1) for a in ("l1", "random") for k in (0.8, 0.4)]
    rows[-1]["macs_kept"] = 0.3  # random at 0.4 on seed 1 removes more than asked
    running = [row("l1", 0.8, 2, 0.9)]
    kept, seeds, left = oneshot.complete(rows + running)
    assert seeds == [0, 1] and left == 1 and kept == rows
    text = oneshot.summary(rows + running)
    assert "Seeds 0, 1 complete" in text and "1 row(s) of seeds not yet complete" in text
    assert "below their target MACs kept at some level: random." in text
    assert "over MACs kept 0.4–0.8 (2 levels)" in text, "the running seed's single level does not shrink the area"


def test_one_shot_cells_past_the_first_seed_can_skip_the_grade_without_recalibration_and_score_the_same(
    measured, tmp_path
):
    checkpoint, folder = measured
    oneshot = script("oneshot_curves")
    common = [str(checkpoint), "--measurement", str(folder), "--arms", "l1", "--kept", "0.5", "--batches", "2"]
    assert oneshot.main([*common, "--seeds", "0,1", "--without", "seed0", "--out", str(tmp_path / "first")]) == 0
    assert oneshot.main([*common, "--seeds", "1", "--out", str(tmp_path / "all")]) == 0
    first = json.loads((tmp_path / "first" / "rows.json").read_text())["rows"]
    every = json.loads((tmp_path / "all" / "rows.json").read_text())["rows"]
    assert all(("val_without" in r) == (r["seed"] == 0) for r in first), "graded without on seed 0 only"
    skipped = [r for r in first if r["seed"] == 1]
    assert [(r["val"], r["test"]) for r in skipped] == [(r["val"], r["test"]) for r in every]
    assert all("val_without" in r for r in every)
