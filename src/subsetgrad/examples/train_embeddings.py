"""Train a small embedding table with plain SGD: `subsetgrad check` finds one trap here.

Save this script and check it:

    subsetgrad example > train_embeddings.py
    subsetgrad check train_embeddings.py

It reports SG101 at the `pytensor.function` call: ``E - lr * grad(cost, E)``
builds a gradient the size of the whole table every step, although only the
looked-up rows change. Compile with ``mode=subsetgrad.mode()`` and the
subsetgrad rewrite updates just those rows; the finding is then only ``info``.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt

VOCAB, DIM, BATCH, STEPS = 5_000, 16, 256, 400
rng = np.random.default_rng(0)

# One vector per word, and a readout that predicts a score from it.
E = pytensor.shared(rng.normal(0.0, 0.1, (VOCAB, DIM)), name="E")
w = pytensor.shared(rng.normal(0.0, 0.5, DIM), name="w")
ids = pt.lvector("ids")
score = pt.vector("score")

cost = ((E[ids] @ w - score) ** 2).mean()
g_E, g_w = pytensor.grad(cost, [E, w])
step = pytensor.function([ids, score], cost, updates={E: E - 2.0 * g_E, w: w - 0.1 * g_w})

for i in range(STEPS):
    batch = rng.integers(0, VOCAB, BATCH)
    loss = step(batch, np.sin(batch / 500.0))
    if i % 100 == 0 or i == STEPS - 1:
        print(f"step {i:4d}  loss {float(loss):.4f}")
