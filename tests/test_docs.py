"""The docs state what the code does: the README's test count, and docs/cli.md's flags against the CLI's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import gen_cli_docs  # noqa: E402

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
OTHER_TOOLS = {
    "--help",
    "--nproc_per_node",
    "--nnodes",
    "--rdzv-backend",
    "--rdzv-endpoint",
    "--rdzv-id",
    "--rdzv_backend",
    # torchrun, SLURM, pytest, pip
    "--rdzv_endpoint",
    "--collect-only",
    "--no-index",
    "--nodes",
    "--ntasks-per-node",
    "--gpus-per-node",
}


def cli_flags() -> dict[str, set[str]]:
    """Command ('prune-snr' for the global options) -> every spelling of its options."""
    group = gen_cli_docs.click_app()
    out = {"prune-snr": {f for p in group.params for f in gen_cli_docs.flags(p)}}
    for name, cmd in group.commands.items():
        out[name] = {f for p in cmd.params for f in gen_cli_docs.flags(p)}
    return out


def documented_flags(text: str) -> dict[str, set[str]]:
    """Command -> the options its generated list in docs/cli.md names (one bullet per option)."""
    out = {}
    for name, body in re.findall(r"<!-- cli:([\w-]+):start -->(.*?)<!-- cli:\1:end -->", text, flags=re.S):
        out[name] = {
            f for line in body.splitlines() if line.startswith("- `--") for f in FLAG.findall(line.split("`")[1])
        }
    return out


def test_readme_states_the_number_of_tests_in_the_fast_set():
    readme = (ROOT / "README.md").read_text()
    stated = re.search(r"make test`?[ :][^\n]*?(\d+) tests", readme)
    assert stated, "README.md: the `make test` line should state how many tests the fast set has"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not slow", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    collected = sum("::" in line for line in run.stdout.splitlines())
    assert int(stated.group(1)) == collected, (
        f"README.md says {stated.group(1)} tests, `make test` collects {collected}"
    )


def test_cli_reference_lists_every_option_of_every_command_and_no_other():
    documented = documented_flags((ROOT / "docs" / "cli.md").read_text())
    actual = cli_flags()
    assert set(documented) == set(actual), (
        f"docs/cli.md has sections for {sorted(documented)}, the CLI has {sorted(actual)}"
    )
    for name in actual:
        missing, extra = actual[name] - documented[name], documented[name] - actual[name]
        assert not missing and not extra, (
            f"docs/cli.md, {name}: undocumented {sorted(missing)}, not in the CLI {sorted(extra)}; "
            "run python3 scripts/gen_cli_docs.py"
        )


def test_every_flag_the_docs_mention_exists():
    known = set().union(*cli_flags().values()) | OTHER_TOOLS
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        if path.name == "results.md":  # generated from past runs: flags as they were then
            text = text.split("<!-- results:start -->")[0]
        unknown = sorted(set(FLAG.findall(text)) - known)
        assert not unknown, f"{path.relative_to(ROOT)} mentions {unknown}, which no command has"


def test_cli_reference_is_what_the_generator_writes():
    assert gen_cli_docs.main(["--check"]) == 0, "docs/cli.md is out of date: run python3 scripts/gen_cli_docs.py"


def tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", *patterns], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [ROOT / f for f in listed.split("\0") if f]


def text_of(path: Path) -> str:
    if path.suffix == ".db":  # an Optuna study: its attributes as text
        import sqlite3

        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = [t for (t,) in db.execute("select name from sqlite_master where type='table'")]
            return "\n".join(str(row) for t in tables for row in db.execute(f"select * from {t}"))
    try:
        return path.read_text()
    except UnicodeDecodeError:
        return ""


MACHINE_PATH = re.compile("(?<![\\w.$~])/(?:" + "|".join(("work", "root", "home", "Users")) + r")/")
TEMP_PATH = re.compile(r"(?<![\w.$~])/tmp/")
HISTORY = re.compile(
    r"\b(?:in |of |before |earlier |this )?sessions? \d+|\bthis session\b|\bissue \d+|\bissue #\d+", re.IGNORECASE
)


def test_committed_files_name_no_folder_of_the_machine_they_were_made_on():
    offenders = [
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in tracked()
        if p.is_file()
        for m in [MACHINE_PATH.search(text_of(p))]
        if m
    ]
    assert not offenders, offenders[:10]


def test_results_and_docs_name_no_temporary_folder():
    offenders = [
        str(p.relative_to(ROOT))
        for p in tracked("benchmarks/results", "docs", "README.md")
        if TEMP_PATH.search(text_of(p))
    ]
    assert not offenders, offenders[:10]


def test_the_repository_speaks_of_the_tool_not_of_its_making():
    offenders = [
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in tracked()
        if p.is_file() and p.suffix != ".db"
        for m in [HISTORY.search(text_of(p))]
        if m
    ]
    assert not offenders, offenders[:10]


def test_the_method_the_docs_cite_is_in_the_repository():
    assert (ROOT / "METHOD.md").read_text().startswith("#")
    assert "../METHOD.md" in (ROOT / "docs" / "method.md").read_text()


def test_the_generated_results_in_the_docs_are_what_the_committed_result_files_give():
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/readme_results.py",
            "benchmarks/results/fmnist_vgg16_w025",
            "docs/results.md",
            "--check",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_the_readme_is_a_page_a_newcomer_reads_in_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 120
