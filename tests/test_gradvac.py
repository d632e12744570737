"""GradVac: against a float64 NumPy Algorithm 1 on the vectors, over steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl


@functools.lru_cache(maxsize=None)
def _transform(num_tasks, beta=0.01, key=0):
  tx = mtl.gradvac(num_tasks, beta=beta, key=key)
  return tx, jax.jit(tx.update)


def _orders(key, num_tasks):
  """The task orders the library draws from ``key`` (same splits)."""
  next_key, order_key = jax.random.split(key)
  orders = jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(
      jax.random.split(order_key, num_tasks))
  return np.asarray(orders), next_key


def reference_step(grads, targets, orders, beta):
  """Algorithm 1 of the paper on the materialised vectors, in float64."""
  grads = np.asarray(grads, np.float64)
  targets = np.array(targets, np.float64)
  modified = grads.copy()
  for i in range(len(grads)):
    for j in orders[i]:
      if j == i:
        continue
      g_i, g_j = modified[i], grads[j]
      cosine = g_i @ g_j / (np.linalg.norm(g_i) * np.linalg.norm(g_j))
      target = targets[i, j]
      if cosine < target:
        modified[i] = g_i + np.linalg.norm(g_i) * (
            target * np.sqrt(1 - cosine ** 2)
            - cosine * np.sqrt(1 - target ** 2)) / (
                np.linalg.norm(g_j) * np.sqrt(1 - target ** 2)) * g_j
      targets[i, j] = (1 - beta) * target + beta * cosine
  return modified.sum(axis=0), targets


@pytest.mark.parametrize('num_tasks, beta', [(3, 0.01), (4, 0.5)])
def test_matches_float64_reference_over_several_steps(num_tasks, beta):
  tx, update = _transform(num_tasks, beta=beta, key=7)
  rng = np.random.default_rng(num_tasks)
  state = tx.init(jnp.zeros(5))
  targets = np.zeros((num_tasks, num_tasks))
  # β = 0.5 moves the targets far from 0 within a few steps, so both branches
  # (cosine below and above its target) are exercised.
  for _ in range(4):
    grads = rng.normal(size=(num_tasks, 5)) + 0.5 * rng.normal(size=5)
    orders, next_key = _orders(state.weighting_state.key, num_tasks)
    expected_update, targets = reference_step(grads, targets, orders, beta)
    updates, state = update(jnp.asarray(grads, jnp.float32), state)
    np.testing.assert_allclose(updates, expected_update, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.weighting_state.targets, targets,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state.weights) @ grads,
                               expected_update, rtol=1e-4, atol=1e-5)
    # The key advances.
    np.testing.assert_array_equal(state.weighting_state.key, next_key)


def test_modified_cosine_reaches_the_target():
  # After the correction, cos(g'_i, g_j) equals φ̂_ij (the closed form's
  # purpose); T = 2 has a single order, so the weights tell g'_1 and g'_2.
  tx, update = _transform(2, beta=0.0)
  state = tx.init(jnp.zeros(2))
  state = state._replace(weighting_state=state.weighting_state._replace(
      targets=jnp.array([[0.0, 0.5], [0.5, 0.0]], jnp.float32)))
  grads = np.array([[1.0, 0.0], [-0.6, 0.8]])  # cos = -0.6 < 0.5.
  _, state = update(jnp.asarray(grads, jnp.float32), state)
  # Hand derivation: g'_1 = g_1 + a g_2, a = ‖g_1‖(0.5·0.8 + 0.6·√0.75)/√0.75.
  amount = (0.5 * 0.8 + 0.6 * np.sqrt(0.75)) / np.sqrt(0.75)
  modified = grads[0] + amount * grads[1]
  cosine = modified @ grads[1] / np.linalg.norm(modified)
  np.testing.assert_allclose(cosine, 0.5, rtol=1e-12)
  np.testing.assert_allclose(state.weights, [1 + amount, 1 + amount],
                             rtol=1e-5)
  # β = 0 keeps the targets.
  np.testing.assert_array_equal(state.weighting_state.targets,
                                [[0.0, 0.5], [0.5, 0.0]])


def test_first_step_is_pcgrad_and_aligned_tasks_are_untouched():
  tx, update = _transform(2)
  state = tx.init(jnp.zeros(2))
  # Conflicting: φ̂ = 0 projects each onto the other's normal (PCGrad).
  updates, _ = update(jnp.array([[1.0, 0.0], [-1.0, 1.0]]), state)
  np.testing.assert_allclose(updates, [0.5, 1.5], rtol=1e-6)
  # Positive cosines above φ̂ = 0: the plain sum.
  updates, state = update(jnp.array([[1.0, 0.0], [1.0, 1.0]]), state)
  np.testing.assert_allclose(updates, [2.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(state.weighting_state.targets,
                             [[0.0, 0.01 / np.sqrt(2)], [0.01 / np.sqrt(2), 0]],
                             rtol=1e-5)


def test_same_key_same_result_and_keys_change_the_order():
  grads = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)),
                      jnp.float32)
  tx, update = _transform(4, beta=0.01, key=1)
  first, state = update(grads, tx.init(jnp.zeros(3)))
  again, _ = update(grads, tx.init(jnp.zeros(3)))
  np.testing.assert_array_equal(first, again)
  # The next step draws new orders from the advanced key: with φ̂ ≈ 0 the
  # same gradients give a different update for some key in a few steps.
  results = [np.asarray(first)]
  for _ in range(3):
    updated, state = update(grads, state)
    results.append(np.asarray(updated))
  assert any(not np.allclose(results[0], other, rtol=1e-3) for other in results[1:])


def test_zero_norm_task_is_skipped():
  tx, update = _transform(2)
  grads = jnp.array([[1.0, 2.0], [0.0, 0.0]])
  updates, state = update(grads, tx.init(jnp.zeros(2)))
  np.testing.assert_allclose(updates, [1.0, 2.0])
  np.testing.assert_array_equal(state.weighting_state.targets,
                                np.zeros((2, 2)))


def test_invalid_beta_is_rejected():
  with pytest.raises(ValueError, match='beta'):
    mtl.gradvac(2, beta=1.5)
