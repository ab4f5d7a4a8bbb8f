"""The pipeline's dataflow graph, as the checker builds it and `tnx graph` draws it.

Nodes are ids such as `model:tiny` or `stage:base`, with attributes (`kind`,
`label`, `span`, `index`); an edge `u → v` means `v` consumes `u` (`role`,
`roles`, `spans`, `output`). Python users get it as a networkx `DiGraph`
(`Pipeline.graph`, converted on first access); the checker, the lint rules and
`tnx graph` use this small class directly, because importing networkx costs
`tnx lint` about 60 ms of a start-up budget measured in `bench/lint_startup.py`.

Iteration orders follow networkx's (nodes and successors in insertion order),
so the two views list nodes and edges identically, and the algorithms below
return what `networkx` returns for the same graph (tested against it).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx

Attrs = dict[str, Any]


class Dataflow:
    """A directed graph with attributed nodes and edges, no parallel edges."""

    def __init__(self) -> None:
        self.nodes: dict[str, Attrs] = {}
        self._succ: dict[str, dict[str, Attrs]] = {}
        self._pred: dict[str, dict[str, Attrs]] = {}

    # ------------------------------------------------------------- building
    def add_node(self, node: str, **attrs: Any) -> None:
        """Add `node`, or update its attributes if it exists (as networkx does)."""
        if node not in self.nodes:
            self.nodes[node] = {}
            self._succ[node] = {}
            self._pred[node] = {}
        self.nodes[node].update(attrs)

    def add_edge(self, source: str, target: str, **attrs: Any) -> None:
        """Add `source → target` (adding missing nodes), or update its attributes."""
        for node in (source, target):
            if node not in self.nodes:
                self.add_node(node)
        data = self._succ[source].setdefault(target, {})
        data.update(attrs)
        self._pred[target][source] = data

    # -------------------------------------------------------------- queries
    def __contains__(self, node: object) -> bool:
        return node in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def has_edge(self, source: str, target: str) -> bool:
        return target in self._succ.get(source, {})

    def edge(self, source: str, target: str) -> Attrs:
        return self._succ[source][target]

    def edges(self) -> Iterator[tuple[str, str, Attrs]]:
        """Every edge with its attributes, by source node then target, in insertion order."""
        for source, targets in self._succ.items():
            for target, data in targets.items():
                yield source, target, data

    def successors(self, node: str) -> list[str]:
        return list(self._succ[node])

    def predecessors(self, node: str) -> list[str]:
        return list(self._pred[node])

    def out_degree(self, node: str) -> int:
        return len(self._succ[node])

    def degree(self, node: str) -> int:
        """Edges in plus edges out; a self-loop counts twice (as in networkx)."""
        return len(self._succ[node]) + len(self._pred[node])

    # ----------------------------------------------------------- algorithms
    def strongly_connected_components(self, within: Iterable[str] | None = None
                                      ) -> list[set[str]]:
        """Tarjan's components of the subgraph induced by `within` (default: all nodes).

        Iterative, so a 10,000-stage chain does not hit Python's recursion limit.
        """
        allowed = set(self.nodes if within is None else within)
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        components: list[set[str]] = []
        for root in self.nodes:
            if root not in allowed or root in index:
                continue
            index[root] = low[root] = len(index)
            stack.append(root)
            on_stack.add(root)
            work = [(root, iter(self._succ[root]))]
            while work:
                node, children = work[-1]
                for child in children:
                    if child not in allowed:
                        continue
                    if child not in index:
                        index[child] = low[child] = len(index)
                        stack.append(child)
                        on_stack.add(child)
                        work.append((child, iter(self._succ[child])))
                        break
                    if child in on_stack:
                        low[node] = min(low[node], index[child])
                else:  # every child done: `node` is finished
                    work.pop()
                    if work:
                        parent = work[-1][0]
                        low[parent] = min(low[parent], low[node])
                    if low[node] == index[node]:
                        component: set[str] = set()
                        while True:
                            member = stack.pop()
                            on_stack.discard(member)
                            component.add(member)
                            if member == node:
                                break
                        components.append(component)
        return components

    def find_cycle(self, source: str, within: Iterable[str] | None = None
                   ) -> list[tuple[str, str]]:
        """The first cycle a depth-first search from `source` meets, as its edges.

        The search follows successors in insertion order, restricted to
        `within`, exactly like `networkx.find_cycle(G.subgraph(within), source)`;
        [] if there is none.
        """
        allowed = set(self.nodes if within is None else within)
        path: list[str] = [source]
        on_path = {source}
        done: set[str] = set()
        work = [iter(self._succ[source])]
        while work:
            node = path[-1]
            for child in work[-1]:
                if child not in allowed or child in done:
                    continue
                if child in on_path:  # a back edge closes the cycle child → … → node → child
                    start = path.index(child)
                    nodes = path[start:] + [child]
                    return list(zip(nodes[:-1], nodes[1:], strict=True))
                path.append(child)
                on_path.add(child)
                work.append(iter(self._succ[child]))
                break
            else:
                work.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
        return []

    def topological_order(self, key: Callable[[str], Any], within: Iterable[str] | None = None
                          ) -> list[str] | None:
        """Dependency order of the subgraph on `within`, ties broken by smallest `key`.

        The order of `networkx.lexicographical_topological_sort`; None if the
        subgraph has a cycle.
        """
        allowed = set(self.nodes if within is None else within)
        waiting = {node: sum(p in allowed for p in self._pred[node])
                   for node in self.nodes if node in allowed}
        position = {node: i for i, node in enumerate(waiting)}  # ties of `key`: insertion order
        ready = [(key(node), position[node], node) for node in waiting if not waiting[node]]
        heapq.heapify(ready)
        ordered: list[str] = []
        while ready:
            _, _, node = heapq.heappop(ready)
            ordered.append(node)
            for child in self._succ[node]:
                if child in waiting:
                    waiting[child] -= 1
                    if not waiting[child]:
                        heapq.heappush(ready, (key(child), position[child], child))
        return ordered if len(ordered) == len(waiting) else None

    # ----------------------------------------------------------- conversion
    def to_networkx(self) -> nx.DiGraph:
        """The same graph as a networkx `DiGraph` (attribute dicts copied, values shared)."""
        import networkx as nx

        graph = nx.DiGraph()
        for node, attrs in self.nodes.items():
            graph.add_node(node, **attrs)
        for source, target, attrs in self.edges():
            graph.add_edge(source, target, **attrs)
        return graph
