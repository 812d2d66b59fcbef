"""Search: a multi-objective Optuna study over pruning configurations, and picking from it."""
from .study import full_result, make_storage, pareto_rows, pick, run_search, save_pareto_plot

__all__ = ["full_result", "make_storage", "pareto_rows", "pick", "run_search", "save_pareto_plot"]
