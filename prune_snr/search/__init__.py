"""Search: a multi-objective Optuna study over pruning configurations, and picking from it."""
from .study import make_storage, pareto_rows, pick, run_search, save_pareto_plot

__all__ = ["make_storage", "pareto_rows", "pick", "run_search", "save_pareto_plot"]
