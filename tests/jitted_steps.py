"""Runs a transformation's jitted update over a list of task gradients."""

import jax


def run(tx, steps, params):
  """``(updates of every step, last state)`` from ``tx.init(params)``."""
  state = tx.init(params)
  update = jax.jit(lambda g, s: tx.update(g, s, params))
  outputs = []
  for grads in steps:
    updates, state = update(grads, state)
    outputs.append(updates)
  return outputs, state
