"""Search: a multi-objective Optuna study over pruning configurations, and picking from it."""
from .study import counted_trials, full_result, make_storage, pareto_rows, pick, run_search, save_pareto_plot

__all__ = ["counted_trials", "full_result", "make_storage", "pareto_rows", "pick", "run_search", "save_pareto_plot"]
