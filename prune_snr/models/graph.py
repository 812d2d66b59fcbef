"""torch-pruning's dependency graph of a model, traced and checked once per prune and reused by every attempt.

Tracing is the step that meets what torch-pruning cannot map, and on a few graphs (ReXNet's partial residual
adds) its walk over the channel groups grows without end; so the first walk runs under a time limit, reports
progress per group, and any failure becomes one line that names the layer being grouped.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.LazyLinear(4))
    >>> _ = net(torch.randn(1, 3, 8, 8))
    >>> graph = ChannelGraph(net, torch.randn(1, 3, 8, 8), ignored=["4"])
    >>> graph.groups  # the two convolutions: one channel group each
    2
"""

from __future__ import annotations

import contextlib
import copy
import signal
import sys
import threading
import time

import torch
import torch_pruning as tp
from torch import nn

from ..errors import ModelError

_LOCK = threading.RLock()
DEFAULT_TIMEOUT = 300.0  # s for tracing and grouping; torch-pruning takes seconds on every CNN of the breadth set
#: what torch-pruning raises on a graph it cannot map or a layer it cannot resize
_MAPPING_ERRORS = (
    ZeroDivisionError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    RuntimeError,
    ValueError,
    AssertionError,
)


class _OutOfTime(BaseException):  # not an Exception: torch-pruning's own ``except Exception`` must not swallow it
    pass


@contextlib.contextmanager
def _deadline(seconds: float | None):
    """Raise ``_OutOfTime`` in this thread after ``seconds`` (main thread on POSIX only; elsewhere no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    outer = signal.getitimer(signal.ITIMER_REAL)[0]
    if outer and outer <= seconds:  # an earlier alarm is set (a test runner's limit): it stays in charge
        yield
        return

    def alarm(*_):
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
        if outer:  # the later alarm that was set before, less the time spent here
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 1e-3))


class ChannelGraph:
    """A model's dependency graph, built and walked once; ``copy()`` gives a fresh (model, graph) pair to prune.

    Raises:
        ModelError: torch-pruning cannot trace or group the model, or takes longer than ``timeout`` seconds.
    """

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        *,
        ignored: list[str],
        timeout: float | None = DEFAULT_TIMEOUT,
        progress=None,
    ):
        self.model, self.ignored, self.example = copy.deepcopy(model).cpu().eval(), list(ignored), example.cpu()
        names = {m: n for n, m in self.model.named_modules()}
        task = progress.add_task("tracing channel dependencies", total=None) if progress is not None else None
        started, current, self.groups = time.perf_counter(), ["the forward trace"], 0
        try:
            with _deadline(timeout):
                self._trace(names, current, progress, task)
        except _OutOfTime:
            raise ModelError(
                f"torch-pruning did not finish grouping the channels of {type(model).__name__} in {timeout:g} s "
                f"(stuck at {current[0]}); raise prune's --graph-timeout, or measure it without pruning"
            ) from None
        except _MAPPING_ERRORS as exc:
            where = _failing_node(exc, names) or current[0]
            raise ModelError(
                f"torch-pruning cannot map the channel dependencies of {type(model).__name__} at {where} "
                f"({type(exc).__name__}: {_first_line(exc)}): "
                "it can be measured, not pruned structurally"
            ) from exc
        finally:
            if hasattr(self, "graph"):
                vars(self.graph).pop("get_pruning_group", None)
            if task is not None:
                progress.remove_task(task)
        self.seconds = time.perf_counter() - started

    def _trace(self, names: dict, current: list[str], progress, task) -> None:
        """Build the dependency graph and walk its channel groups into ``self.members``, keeping ``current[0]`` on
        the layer being grouped so that a timeout or failure can name it."""
        self.graph = tp.DependencyGraph().build_dependency(self.model, example_inputs=self.example)
        group_of = self.graph.get_pruning_group

        def grouping(module, *args, **kwargs):  # which layer the walk is on, for the messages
            current[0] = f"the channel group of '{names.get(module, type(module).__name__)}'"
            return group_of(module, *args, **kwargs)

        self.graph.get_pruning_group = grouping
        self.members: list[list[str]] = []  # per channel group, the layers whose outputs it prunes
        for group in self.graph.get_all_groups(ignored_layers=self._modules(self.model)):
            self.members.append(
                [
                    names[dep.target.module]
                    for dep, _ in group
                    if self.graph.is_out_channel_pruning_fn(dep.handler) and dep.target.module in names
                ]
            )
            self.groups = len(self.members)
            if task is not None:
                progress.update(task, description=f"tracing channel dependencies: {self.groups} groups")

    def copy(self) -> tuple[nn.Module, tp.DependencyGraph]:
        """A deep copy of the model and of its graph, pointing at each other; autograd nodes and torch-pruning's
        layer pruners stay shared (its handlers are compared by identity)."""
        with _LOCK:  # the recursion limit is the process's; search trials run in threads
            return self._copy()

    def _copy(self) -> tuple[nn.Module, tp.DependencyGraph]:
        shared = [self.graph.ops, *self.graph.REGISTERED_PRUNERS.values(), *self.graph.CUSTOMIZED_PRUNERS.values()]
        memo = {id(o): o for o in shared}
        for node in self.graph.module2node.values():
            memo[id(node.grad_fn)] = node.grad_fn
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(
            max(limit, 20 * len(self.graph.module2node) + 1000)
        )  # nodes link nodes: copied depth-first
        try:
            return copy.deepcopy((self.model, self.graph), memo)
        finally:
            sys.setrecursionlimit(limit)

    def pruner(self, importance_factory, kwargs_of, **kwargs) -> tuple[nn.Module, tp.pruner.MetaPruner, object]:
        """A MetaPruner on a fresh copy, handed this graph instead of tracing anew: (model, pruner, importance).

        ``importance_factory(copy)`` and ``kwargs_of(copy)`` (per-layer ratios) read the copy's own modules.
        """
        model, graph = self.copy()
        importance = importance_factory(model)
        with _prebuilt(graph):
            pruner = tp.pruner.MetaPruner(
                model, None, importance=importance, ignored_layers=self._modules(model), **kwargs_of(model), **kwargs
            )
        return model, pruner, importance

    def step(self, model: nn.Module, pruner: tp.pruner.MetaPruner) -> None:
        """One pruning step; a failure inside torch-pruning (an importance it cannot shape, a split it cannot
        resize), or a pruned model that no longer runs, becomes one line naming the layer."""
        try:
            pruner.step()
            with torch.no_grad():
                model.eval()(self.example)  # a layer torch-pruning resized without its own parameters fails here
        except _MAPPING_ERRORS as exc:
            where = _failing_node(exc, {m: n for n, m in model.named_modules()}) or "a channel group"
            raise ModelError(
                f"torch-pruning failed to prune {type(model).__name__} at {where} ({type(exc).__name__}: "
                f"{_first_line(exc)}): try another --criterion, or measure it without pruning"
            ) from exc

    def _modules(self, model: nn.Module) -> list[nn.Module]:
        named = dict(model.named_modules())
        return [named[n] for n in self.ignored]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"


def _failing_node(exc: BaseException, names: dict) -> str | None:
    """The graph node torch-pruning was on when it failed (its traceback's innermost ``node``), named by the
    nearest layer: ``a reshape after 'stage2.0.branch2.7'``."""
    node, layer, tb = None, None, exc.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        # a forward that failed: the innermost layer of the model running
        if isinstance(local.get("self"), nn.Module) and local["self"] in names:
            layer = names[local["self"]]
        if isinstance(local.get("group"), tp.dependency.Group) and len(local["group"]):
            node = local["group"][0].dep.target  # the group's root layer
        node = local.get("node", node)
        tb = tb.tb_next
    if node is None or not hasattr(node, "inputs"):
        return f"'{layer}'" if layer else None
    if node.module in names:
        return f"'{names[node.module]}'"
    op = type(node.module).__name__.strip("_").removesuffix("Op").lower() or "an op"
    seen, frontier = set(), list(node.inputs)
    while frontier:  # breadth-first towards the input, to the nearest named layer
        n = frontier.pop(0)
        if n.module in names:
            return f"a {op} after '{names[n.module]}'"
        if id(n) not in seen:
            seen.add(id(n))
            frontier.extend(n.inputs)
    return f"a {op}"


_HANDED = threading.local()  # per thread: the graph the next build of its model returns
_BUILD = tp.DependencyGraph.build_dependency


def _build_or_hand(self, model, *args, **kwargs):
    graph = getattr(_HANDED, "graph", None)
    if graph is None or graph.model is not model:
        return _BUILD(self, model, *args, **kwargs)
    graph.ignored_params = kwargs.get("ignored_params") or []
    return graph


@contextlib.contextmanager
def _prebuilt(graph: tp.DependencyGraph):
    # MetaPruner builds its graph inside __init__ and takes no graph: while this thread constructs one for the copy,
    # the build of that very model returns the copied graph; every other build (other models, other threads) traces
    if tp.DependencyGraph.build_dependency is not _build_or_hand:
        tp.DependencyGraph.build_dependency = _build_or_hand
    _HANDED.graph = graph
    try:
        yield
    finally:
        _HANDED.graph = None
