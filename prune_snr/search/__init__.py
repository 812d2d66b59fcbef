"""Search: a multi-objective Optuna study over pruning configurations, and picking from it."""

from .api import search
from .parallel import run_workers
from .study import (
    PARAMETERS,
    counted_trials,
    full_result,
    load_study,
    make_storage,
    pareto_rows,
    parse_fix,
    pick,
    run_search,
    save_pareto_plot,
    write_pick,
)

__all__ = [
    "PARAMETERS",
    "counted_trials",
    "full_result",
    "load_study",
    "make_storage",
    "pareto_rows",
    "parse_fix",
    "pick",
    "run_search",
    "run_workers",
    "search",
    "save_pareto_plot",
    "write_pick",
]
