"""SG3xx: optimizer state on lookup tables."""

from __future__ import annotations

from collections.abc import Iterator

from pytensor.graph.basic import Variable

from subsetgrad.graph import (
    describe,
    megabytes,
    shape_text,
    table_bytes,
)
from subsetgrad.lint.analyses import state_updates
from subsetgrad.lint.findings import Finding
from subsetgrad.lint.program import Program
from subsetgrad.lint.registry import Rule, rule
from subsetgrad.lint.source import first_location


@rule(
    "SG301",
    "optimizer-state-decay",
    summary="Optimizer state of a table's shape follows a dense scatter gradient.",
    hint="Choose what rows outside the batch do: subsetgrad.sparse_updates(updates, "
    "policy='lazy') leaves them as they are (LazyAdam), policy='catchup' applies the steps "
    "they skipped when next looked up or at .flush (the dense result); an optimizer "
    "unchanged at zero gradient (sgd, adagrad) is made sparse exactly by the rewrite. If the "
    "dense decay is intended, suppress this finding.",
)
def optimizer_state_decay(program: Program, r: Rule) -> Iterator[Finding]:
    """
    ## What it does
    Flags optimizer state with the shape of a lookup table (a moment, an
    accumulator, a velocity) that is updated from the table's scatter
    gradient and does not stay unchanged where that gradient is zero. Whether
    it stays unchanged is read from the update's algebra: the gradient is set
    to zero and the expression simplified. Adagrad's ``acc + g**2`` does, so it
    is not flagged; RMSprop's ``rho * acc + (1 - rho) * g**2`` does not.

    ## Why is this bad?
    Every step then decays or moves the state of every row, also the rows
    outside the batch: O(V x D) work per step, and a rare word's accumulator
    decays towards zero between its visits, so its next step is huge.

    ## Example
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.ones((100, 4)), name="W")
    acc = pytensor.shared(np.zeros((100, 4)), name="acc")
    idx = pt.lvector("idx")
    g = pytensor.grad((W[idx] ** 2).sum(), W)
    new_acc = 0.9 * acc + 0.1 * g ** 2
    step = pytensor.function(
        [idx], [], updates={acc: new_acc, W: W - 0.01 * g / pt.sqrt(new_acc + 1e-6)}
    )
    ```

    ## Use instead
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt
    import subsetgrad

    W = pytensor.shared(np.ones((100, 4)), name="W")
    acc = pytensor.shared(np.zeros((100, 4)), name="acc")
    idx = pt.lvector("idx")
    g = pytensor.grad((W[idx] ** 2).sum(), W)
    new_acc = 0.9 * acc + 0.1 * g ** 2
    updates = {acc: new_acc, W: W - 0.01 * g / pt.sqrt(new_acc + 1e-6)}
    sparse = subsetgrad.sparse_updates(updates, policy="catchup")
    step = pytensor.function([idx], [], updates=sparse.updates)
    flush = pytensor.function([], [], updates=sparse.flush)
    ```
    Say what the rows outside the batch do: here they catch up on the decay they
    skipped when next looked up (or at ``flush``), which equals the dense result.
    ``policy="lazy"`` leaves them unchanged instead (LazyAdam's semantics).

    ## Rewrite
    The rewrite makes a step sparse only where a zero gradient leaves every
    state unchanged (SGD, adagrad), since only then are the numbers the same.
    For a decaying state, `subsetgrad.sparse_updates` chooses the semantics.
    """
    decaying = [u for u in state_updates(program) if u.decays]
    # Unnamed states (PyMC's Adam makes two per table) are told apart by their order
    # among those that would otherwise get the same message (unnamed tables too).
    unnamed: dict[tuple[str, str], list[Variable]] = {}
    for update in decaying:
        if not update.state.name:
            key = (shape_text(update.state), describe(update.tables[0]))
            unnamed.setdefault(key, []).append(update.state)
    rank: dict[Variable, str] = {}
    for peers in unnamed.values():
        for k, peer in enumerate(peers, start=1):
            rank[peer] = f" {k} of {len(peers)}" if len(peers) > 1 else ""
    for update in decaying:
        state, table = update.state, update.tables[0]
        if state.name:
            name = f"optimizer state {describe(state)}"
        else:
            name = f"unnamed optimizer state{rank[state]} {shape_text(state)}"
        yield r.finding(
            f"{name} follows the dense scatter gradient of "
            f"{describe(table)} and changes where that gradient is zero: it decays or moves "
            f"on every row outside the batch (~{megabytes(table_bytes(state))} per step).",
            first_location(update.value, state),
        )
