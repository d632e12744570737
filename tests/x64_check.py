"""Runs every registered method with ``jax_enable_x64`` on float64 gradients.

Run as a script (the x64 flag must be set before JAX computes anything, so it
gets its own process); prints one JSON object: method name -> "ok" or the
error. ``test_properties.py`` runs it once and checks each method.
"""

import json
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from mtl_optax.catalog import METHODS

NUM_TASKS = 4


def _check(method) -> str:
  rng = np.random.default_rng(0)
  matrix = rng.normal(size=(NUM_TASKS, 6))
  matrix[0] = -0.8 * matrix[1:].sum(axis=0) + 0.3 * matrix[0]
  losses = rng.uniform(0.3, 3.0, size=NUM_TASKS)
  results = {}
  for dtype in (jnp.float64, jnp.float32):
    tx = method.make(NUM_TASKS)
    params = {'w': jnp.zeros((3, 2), dtype)}
    grads = {'w': jnp.asarray(matrix, dtype).reshape(NUM_TASKS, 3, 2)}
    update = jax.jit(lambda g, s, l, tx=tx, p=params: tx.update(
        g, s, p, task_losses=l))
    state = tx.init(params)
    for _ in range(2):  # A second step exercises the updated state.
      updates, new_state = update(grads, state, jnp.asarray(losses, dtype))
      for before, after in zip(jax.tree.leaves(state),
                               jax.tree.leaves(new_state)):
        if jnp.asarray(before).dtype != jnp.asarray(after).dtype:
          return f'state dtype changed: {before.dtype} -> {after.dtype}'
      state = new_state
    if updates['w'].dtype != dtype:
      return f'{jnp.dtype(dtype).name} in, {updates["w"].dtype} out'
    if not np.all(np.isfinite(np.asarray(updates['w']))):
      return f'non-finite {jnp.dtype(dtype).name} update'
    results[jnp.dtype(dtype).name] = np.asarray(updates['w'], np.float64)
  scale = max(1.0, float(np.abs(results['float32']).max()))
  error = float(np.abs(results['float64'] - results['float32']).max()) / scale
  return 'ok' if error < 1e-3 else f'float64 and float32 differ by {error:.2e}'


def main():
  report = {}
  for method in METHODS:
    try:
      report[method.name] = _check(method)
    except Exception:  # pylint: disable=broad-except
      report[method.name] = traceback.format_exc(limit=3)
  json.dump(report, sys.stdout)


if __name__ == '__main__':
  # Only when run as a script: pytest's doctest collection imports this
  # module, and x64 must not leak into the test session.
  jax.config.update('jax_enable_x64', True)
  main()
