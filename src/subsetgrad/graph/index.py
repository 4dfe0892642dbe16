"""`GraphIndex`: a graph's nodes in order and their clients, built once; and walks over it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from itertools import islice
from typing import Any

from pytensor.graph.basic import Apply, Variable
from pytensor.graph.fg import FunctionGraph

from subsetgrad.graph.ops import INC_OPS, LOOKUP_OPS, is_subclass, is_term, is_zero, table_key


class GraphIndex:
    """Apply nodes in topological order, and who uses each variable, built once.

    `clients` has the uses of every variable; `region_clients` only those of
    the variables `inc_region` outputs (whose uses are all in that region too),
    which is what decompositions ask about and costs far less to gather.
    """

    def __init__(
        self,
        nodes: list[Apply],
        outputs: Sequence[Variable],
        clients: Mapping[Variable, list[tuple[Apply, int]]] | None = None,
        *,
        root_clients: bool = True,
    ) -> None:
        self.nodes = nodes
        self.outputs = list(outputs)
        self.output_set = frozenset(self.outputs)
        self.root_clients = root_clients
        if clients is not None:
            self.__dict__["clients"] = clients

    @cached_property
    def clients(self) -> Mapping[Variable, list[tuple[Apply, int]]]:
        """Each variable's uses in topological order (a graph input's only with `root_clients`)."""
        clients: dict[Variable, list[tuple[Apply, int]]] = {}
        users_of, roots = clients.get, self.root_clients
        for node in self.nodes:
            j = -1
            for inp in node.inputs:
                j += 1
                if inp.owner is None and not roots:
                    continue
                users = users_of(inp)
                if users is None:
                    clients[inp] = [(node, j)]
                else:
                    users.append((node, j))
        return clients

    @cached_property
    def region_clients(self) -> Mapping[Variable, list[tuple[Apply, int]]]:
        return self.clients

    @cached_property
    def region_vars(self) -> set[Variable]:
        """The variables `inc_region`'s nodes output."""
        return {out for node in self.inc_region for out in node.outputs}

    @cached_property
    def node_set(self) -> set[Apply]:
        return set(self.nodes)

    @cached_property
    def _by_op_type(self) -> dict[type, list[Apply]]:
        groups: dict[type, list[Apply]] = {}
        for node in self.nodes:
            groups.setdefault(type(node.op), []).append(node)
        return groups

    def nodes_of(self, *op_classes: type) -> list[Apply]:
        """Nodes whose op is an instance of one of `op_classes`."""
        return [
            n for t, group in self._by_op_type.items() if is_subclass(t, op_classes) for n in group
        ]

    def nodes_running(self, ops: Iterable[Any]) -> list[Apply]:
        """Nodes whose op is one of `ops` itself, not an equal one (a clone shares its op)."""
        ids = {id(op): type(op) for op in ops}
        return [
            n for t in set(ids.values()) for n in self._by_op_type.get(t, ()) if id(n.op) in ids
        ]

    @cached_property
    def _lookups(self) -> dict[int, list[Apply]]:
        groups: dict[int, list[Apply]] = {}
        for node in self.nodes_of(*LOOKUP_OPS):
            groups.setdefault(table_key(node.inputs[0]), []).append(node)
        return groups

    def lookups_of(self, table: Variable) -> list[Apply]:
        """The lookups (``W[idx]``, ``W[i]``, ``W[:, j]``) reading `table` or its storage."""
        return self._lookups.get(table_key(table), [])

    @cached_property
    def incs(self) -> list[Apply]:
        return self.nodes_of(*INC_OPS)

    @cached_property
    def zero_based(self) -> frozenset[Apply]:
        """Increments whose base is provably zero, found once per graph."""
        return frozenset(n for n in self.incs if is_zero(n.inputs[0]))

    @cached_property
    def scatters(self) -> frozenset[Apply]:
        """The scatters into zeros: gradients of lookups."""
        return frozenset(n for n in self.zero_based if is_term(n))

    @cached_property
    def inc_region(self) -> list[Apply]:
        """The increments and every node downstream of one, in topological order.

        Only increments start a decomposition and only their descendants can
        extend one (or depend on a scatter): the region to order, not the whole graph.
        """
        return downstream(self.incs, self.clients)

    @classmethod
    def from_fgraph(cls, fgraph: FunctionGraph) -> GraphIndex:
        return cls(list(fgraph.toposort()), fgraph.outputs, fgraph.clients)

    @classmethod
    def from_outputs(cls, outputs: Sequence[Variable], *, root_clients: bool = True) -> GraphIndex:
        """Index the graph behind `outputs` in one depth-first pass.

        The pass also finds `inc_region` and `region_clients`: each node is
        placed once its inputs are, so whether it reads the region is known
        then. `clients` is gathered only if asked for; with `root_clients`
        False it leaves out the uses of the graph's inputs (constants, tables).
        """
        nodes: list[Apply] = []
        groups: dict[type, list[Apply]] = {}
        # Per op class: its group, and whether it is an increment (starts the region).
        kinds: dict[Any, tuple[list[Apply], bool]] = {}
        region: list[Apply] = []
        region_vars: set[Variable] = set()
        region_clients: dict[Variable, list[tuple[Apply, int]]] = {}
        # A node under `_FINISH` on the stack is placed once the nodes above it are.
        stack: list[Any] = [o.owner for o in reversed(outputs) if o.owner is not None]
        entered: set[Apply] = set()
        # Bound once: this loop runs for every node and edge of the graph.
        pop, push, enter, place = stack.pop, stack.append, entered.add, nodes.append
        while stack:
            node = pop()
            if node is _FINISH:
                node = pop()
                place(node)
                op_type: Any = type(node.op)
                kind = kinds.get(op_type)
                if kind is None:
                    group = groups[op_type] = []
                    kind = kinds[op_type] = group, is_subclass(op_type, INC_OPS)
                group, inc = kind
                group.append(node)
                inputs = node.inputs
                if inc or not region_vars.isdisjoint(inputs):
                    region.append(node)
                    region_vars.update(node.outputs)
                    j = -1
                    for inp in inputs:
                        j += 1
                        if inp in region_vars:
                            users = region_clients.get(inp)
                            if users is None:
                                region_clients[inp] = [(node, j)]
                            else:
                                users.append((node, j))
                continue
            if node in entered:
                continue  # pushed again by another client before it was placed
            enter(node)
            push(node)
            push(_FINISH)
            for inp in node.inputs:
                parent = inp.owner
                if parent is not None and parent not in entered:
                    push(parent)
        index = cls(nodes, outputs, root_clients=root_clients)
        # Filled in the same pass rather than by more walks over the graph.
        index.__dict__.update(
            _by_op_type=groups,
            node_set=entered,
            inc_region=region,
            region_vars=region_vars,
            region_clients=region_clients,
        )
        return index


def downstream(
    starts: Iterable[Apply], clients: Mapping[Variable, list[tuple[Apply, int]]]
) -> list[Apply]:
    """`starts` and every node that reads from them, each after its parents among these.

    One depth-first walk along the clients; its reverse post-order is topological.
    """
    order: list[Apply] = []
    entered: set[Apply] = set()
    finish = order.append
    for start in starts:
        # A node under `_FINISH` on the stack is done once the nodes above it are.
        stack: list[Any] = [start]
        pop, push = stack.pop, stack.append
        while stack:
            node = pop()
            if node is _FINISH:
                finish(pop())
                continue
            if node in entered:
                continue
            entered.add(node)
            push(node)
            push(_FINISH)
            for out in node.outputs:
                for client, _ in clients.get(out, ()):
                    if client not in entered and isinstance(client, Apply):
                        push(client)
    order.reverse()
    return order


_FINISH = object()


def scatter_dependent(index: GraphIndex) -> set[Variable]:
    """Every variable with a scatter into zeros among its ancestors (or that is one).

    The set may be the index's own: read it, do not change it.
    """
    scatters = index.scatters
    region = index.inc_region
    if len(scatters) == len(index.incs):
        # Every increment is a scatter: everything downstream of one depends on one.
        return index.region_vars
    dependent: set[Variable] = set()
    for node in region:
        if node in scatters or any(i in dependent for i in node.inputs):
            dependent.update(node.outputs)
    return dependent


def source_masks(sources: Mapping[Variable, int], index: GraphIndex) -> dict[Variable, int]:
    """For every variable that depends on one of `sources`, the OR of their bit masks.

    One pass over the nodes in topological order, from the first that outputs
    a source, so the cost is the graph's size however many sources (and
    rules) ask: "which gradients does each update use?" without a walk per
    update.
    """
    masks = dict(sources)
    get = masks.get
    nodes = index.nodes
    starts = {s.owner for s in sources}
    # Nothing before the first source's node depends on a source, unless one is a graph input.
    first = 0
    if None not in starts:
        first = next((k for k, node in enumerate(nodes) if node in starts), len(nodes))
    masked = masks.keys()
    for node in islice(nodes, first, None):
        if masked.isdisjoint(node.inputs):
            # Most nodes: one test in C. With no masked input the loops below change
            # nothing (a source's own mask is in `masks` from the start).
            continue
        # Masks can be thousands of bits wide: OR only when there is a new bit to add.
        mask = 0
        for i in node.inputs:
            m = get(i)
            if m and m != mask:
                mask = mask | m if mask else m
        for out in node.outputs:
            own = sources.get(out)
            if own is not None:
                masks[out] = mask | own
            elif mask:
                masks[out] = mask
    return masks


def depends_on(
    queries: Sequence[tuple[Variable, Collection[Variable]]], index: GraphIndex
) -> list[bool]:
    """For each ``(var, sources)``: whether `var` is, or depends on, one of `sources`.

    A walk up from each `var` ends at the first source it meets, which is
    usually a step or two away (``set_subtensor(rows, rows - d)`` reads `rows`).
    The walks share a budget of a few steps per node of the graph, each step
    charged for the inputs it reads; the queries still open when it runs out
    get one `source_masks` pass. So the cost stays linear in the graph's size
    whatever the queries ask.
    """
    answers: list[bool] = []
    budget = 3 * len(index.nodes)
    for var, sources in queries:
        found = var in sources
        stack, seen = [var], {var}
        while stack and not found and budget > 0:
            owner = stack.pop().owner
            if owner is None:
                continue
            inputs = owner.inputs
            budget -= 1 + len(inputs)
            for i in inputs:
                if i in sources:
                    found = True
                    break
                if i not in seen:
                    seen.add(i)
                    stack.append(i)
        if not found and stack:
            break  # out of budget with this walk unfinished
        answers.append(found)
    rest = queries[len(answers) :]
    if rest:
        # One bit per distinct collection of sources (queries often share one).
        bit_of: dict[int, int] = {}
        bits: dict[Variable, int] = {}
        for _, sources in rest:
            if id(sources) not in bit_of:
                bit = bit_of[id(sources)] = 1 << len(bit_of)
                for s in sources:
                    bits[s] = bits.get(s, 0) | bit
        masks = source_masks(bits, index)
        answers.extend(bool(masks.get(var, 0) & bit_of[id(sources)]) for var, sources in rest)
    return answers


def ancestors(
    roots: Iterable[Variable], stop: Callable[[Variable], bool] | None = None
) -> Iterator[Variable]:
    """Every variable the `roots` depend on, each once; `stop(var)` ends the walk at `var`.

    The one ancestor walk of the rules; `var` itself is still yielded when it stops.
    """
    stack = list(roots)
    seen = set(stack)
    while stack:
        var = stack.pop()
        yield var
        if var.owner is None or (stop is not None and stop(var)):
            continue
        for i in var.owner.inputs:
            if i not in seen:
                seen.add(i)
                stack.append(i)
