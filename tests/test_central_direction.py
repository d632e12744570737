"""central_direction: thesis eqs. 4.6–4.7.

Expected values: hand derivations and a float64 NumPy reference
(min-norm point of the unit gradients by exhaustive KKT enumeration, see
tests/min_norm_reference.py, then w_t ∝ k_t / n_t).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import min_norm_reference as reference
import mtl_optax as mtl


@functools.lru_cache(maxsize=None)
def _step(num_tasks):
  tx = mtl.central_direction(num_tasks)
  return jax.jit(lambda grads: tx.update(grads, tx.init(None)))


def _numpy_central_direction(grads):
  grads = np.asarray(grads, np.float64)
  norms = np.linalg.norm(grads, axis=1)
  units = grads / norms[:, None]
  unit_weights, _ = reference.exhaustive(units @ units.T)  # k*, eq. 4.6.
  gamma = 1.0 / np.sum(unit_weights / norms)  # Eq. 4.7.
  weights = gamma * unit_weights / norms
  return weights, weights @ grads


def _grads(num_tasks, seed):
  rng = np.random.default_rng(seed)
  grads = rng.normal(size=(num_tasks, 6)) * np.exp(
      1.5 * rng.normal(size=(num_tasks, 1)))
  grads[0] = -0.6 * grads[1:].sum(axis=0) + 0.3 * grads[0]
  return grads.astype(np.float32)


def test_orthogonal_gradients_by_hand():
  # Unit gradients e_1, e_2: k* = [½, ½]; w ∝ [½ / 1, ½ / 4] = [0.8, 0.2];
  # v = [0.8, 0.8] makes 45° with both gradients.
  updates, state = _step(2)(jnp.array([[1.0, 0.0], [0.0, 4.0]]))
  np.testing.assert_allclose(state.weights, [0.8, 0.2], rtol=1e-6)
  np.testing.assert_allclose(updates, [0.8, 0.8], rtol=1e-6)


@pytest.mark.parametrize('num_tasks', [3, 5])
def test_matches_numpy_reference(num_tasks):
  for seed in range(3):
    grads = _grads(num_tasks, seed)
    expected_weights, expected_update = _numpy_central_direction(grads)
    updates, state = _step(num_tasks)(jnp.asarray(grads))
    np.testing.assert_allclose(state.weights, expected_weights, atol=1e-4)
    np.testing.assert_allclose(
        updates, expected_update,
        atol=1e-4 * np.abs(expected_update).max())


@pytest.mark.parametrize('seed', range(4))
def test_weights_sum_to_one_and_directions_do_not_conflict(seed):
  grads = _grads(5, seed)
  updates, state = _step(5)(jnp.asarray(grads))
  np.testing.assert_allclose(np.sum(state.weights), 1.0, atol=1e-6)
  assert np.all(np.asarray(state.weights) >= 0)
  grads64, update64 = grads.astype(np.float64), np.asarray(updates, np.float64)
  cosines = grads64 @ update64 / (np.linalg.norm(grads64, axis=1)
                                  * np.linalg.norm(update64))
  assert np.all(cosines >= -1e-5), cosines
  # KKT of eq. 4.6 on the unit gradients ḡ_t, with k_t ∝ w_t n_t: every
  # ḡ_t · Σ k ḡ >= ‖Σ k ḡ‖², with equality on the support (equal angles).
  norms = np.linalg.norm(grads64, axis=1)
  unit_weights = np.asarray(state.weights, np.float64) * norms
  unit_weights /= unit_weights.sum()
  units = grads64 / norms[:, None]
  unit_dots = units @ (unit_weights @ units)
  value = unit_weights @ unit_dots
  support = unit_weights > 1e-3
  np.testing.assert_allclose(unit_dots[support], value, atol=1e-5)
  assert np.all(unit_dots >= value - 1e-5), (unit_dots, value)


def test_permuting_tasks_permutes_weights_and_scaling_scales_update():
  grads = _grads(5, seed=9)
  updates, state = _step(5)(jnp.asarray(grads))
  permutation = np.array([1, 3, 0, 4, 2])
  permuted_updates, permuted_state = _step(5)(jnp.asarray(grads[permutation]))
  np.testing.assert_allclose(permuted_state.weights,
                             np.asarray(state.weights)[permutation], atol=1e-5)
  np.testing.assert_allclose(permuted_updates, updates,
                             atol=1e-5 * np.abs(updates).max())
  scaled_updates, _ = _step(5)(jnp.asarray(grads) * 1e-6)
  np.testing.assert_allclose(scaled_updates, np.asarray(updates) * 1e-6,
                             rtol=1e-4, atol=1e-10)


def test_zero_norm_tasks():
  # Decision: a zero gradient is left out of eq. 4.6 and gets weight 0; the
  # others get the central direction of the remaining tasks (hand: the
  # orthogonal example above).
  grads = jnp.array([[1.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
  updates, state = _step(3)(grads)
  np.testing.assert_allclose(state.weights, [0.8, 0.0, 0.2], rtol=1e-6)
  np.testing.assert_allclose(updates, [0.8, 0.8], rtol=1e-6)
  # Two tasks with one zero: all weight on the other (closed-form path).
  updates, state = _step(2)(jnp.array([[0.0, 0.0], [3.0, 4.0]]))
  np.testing.assert_array_equal(state.weights, [0.0, 1.0])
  np.testing.assert_array_equal(updates, [3.0, 4.0])
  # All zero: 1/T each, a zero update.
  updates, state = _step(3)(jnp.zeros((3, 2)))
  np.testing.assert_allclose(state.weights, np.full(3, 1 / 3))
  np.testing.assert_array_equal(updates, 0.0)


def test_one_task_and_bad_arguments():
  updates, state = _step(1)(jnp.array([[2.0, -1.0]]))
  np.testing.assert_array_equal(state.weights, [1.0])
  np.testing.assert_array_equal(updates, [2.0, -1.0])
  with pytest.raises(ValueError, match='max_iters'):
    mtl.central_direction(3, max_iters=0)
  with pytest.raises(ValueError, match='num_tasks'):
    mtl.central_direction(0)
