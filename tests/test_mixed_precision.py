"""bfloat16 task gradients: float32 Gramian, bfloat16 updates, f32-close weights.

The same gradients go through each method once in float32 and once rounded
to bfloat16. Rounding moves each entry by at most 2^-9 relative, so the
Gramian moves by about that much and the weights of a well-conditioned
problem by about that much too. benchmarks/bench_mixed_precision.py measures
(T = 4, P = 1e3) weights within 1.2e-4 and updates within 2.7e-3 relative,
and on this problem weights within 2.2e-4 and updates within 3.3e-3;
the tolerances below (1e-2) are the bf16 rounding unit 2^-8 with a margin.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from mtl_optax.catalog import METHODS

NUM_TASKS, SIZE = 4, 256
TOLERANCE = 1e-2
CHECKED = ('mgda', 'upgrad', 'db_mtl', 'logse')


def _problem():
  """Agreeing tasks and one that points partly against them (seed 0)."""
  rng = np.random.default_rng(0)
  common = rng.normal(size=SIZE)
  matrix = common + 1.5 * rng.normal(size=(NUM_TASKS, SIZE))
  matrix[0] = -0.5 * common + rng.normal(size=SIZE)
  grads = {'w': jnp.asarray(matrix[:, :192].reshape(NUM_TASKS, 12, 16),
                            jnp.float32),
           'b': jnp.asarray(matrix[:, 192:], jnp.float32)}
  losses = jnp.asarray(rng.uniform(0.5, 2.0, size=NUM_TASKS), jnp.float32)
  return grads, losses


def _bf16(tree):
  return jax.tree.map(lambda leaf: leaf.astype(jnp.bfloat16), tree)


@functools.cache
def _update(name):
  method = next(m for m in METHODS if m.name == name)
  tx = method.make(NUM_TASKS)

  @jax.jit
  def update(task_grads, task_losses):
    params = jax.tree.map(lambda leaf: leaf[0], task_grads)
    state = tx.init(params)
    losses = task_losses if method.needs_losses else None
    return tx.update(task_grads, state, params, task_losses=losses)

  return update


def _relative_error(actual, expected):
  actual = np.concatenate([np.asarray(leaf, np.float64).ravel()
                           for leaf in jax.tree.leaves(actual)])
  expected = np.concatenate([np.asarray(leaf, np.float64).ravel()
                             for leaf in jax.tree.leaves(expected)])
  return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


def test_gramian_of_bf16_gradients_accumulates_in_float32():
  grads, _ = _problem()
  half = _bf16(grads)
  gram, scale = jax.jit(mtl.gramian)(half)
  assert gram.dtype == jnp.float32
  # Independent reference: the float64 Gramian of the bf16-rounded entries.
  # bf16 accumulation would be off by ~1e-2; float32 by ~1e-7.
  matrix = np.concatenate([np.asarray(leaf, np.float64).reshape(NUM_TASKS, -1)
                           for leaf in jax.tree.leaves(half)], axis=1)
  np.testing.assert_allclose(np.asarray(gram) * float(scale)**2,
                             matrix @ matrix.T, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('name', CHECKED)
def test_bf16_gradients_give_bf16_updates_close_to_float32(name):
  grads, losses = _problem()
  update32, state32 = _update(name)(grads, losses)
  update16, state16 = _update(name)(_bf16(grads), losses)

  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(update16))
  weights16, weights32 = mtl.last_weights(state16), mtl.last_weights(state32)
  assert weights16.dtype == jnp.float32
  weights_error = (np.max(np.abs(weights16 - weights32))
                   / np.max(np.abs(weights32)))
  assert weights_error < TOLERANCE
  assert _relative_error(update16, update32) < TOLERANCE
  # Not vacuous: rounding did change the inputs and the update.
  assert 0 < _relative_error(_bf16(grads), grads)
  assert 0 < _relative_error(update16, update32)
