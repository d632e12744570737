"""mgda: min-norm weights of (optionally normalised) gradients, raw update.

Expected values: the paper's worked example (METHODS.md), hand derivations,
and a float64 NumPy reference (exhaustive KKT enumeration, see
tests/min_norm_reference.py) applied to the normalised Gramian.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import min_norm_reference as reference
import mtl_optax as mtl


@functools.lru_cache(maxsize=None)
def _step(num_tasks, normalization='none', task_specific=None):
  tx = mtl.mgda(num_tasks, normalization=normalization,
                task_specific=task_specific)
  update = jax.jit(lambda grads, losses: tx.update(
      grads, tx.init(None), task_losses=losses))
  return update


def _numpy_mgda(grads, losses, normalization):
  """Float64: α from the normalised Gramian, update from the raw gradients."""
  grads = np.asarray(grads, np.float64)
  norms = np.linalg.norm(grads, axis=1)
  scales = {'none': np.ones(len(grads)), 'l2': norms,
            'loss': np.asarray(losses, np.float64),
            'loss+': np.asarray(losses, np.float64) * norms}[normalization]
  normalised = grads / scales[:, None]
  weights, _ = reference.exhaustive(normalised @ normalised.T)
  return weights, weights @ grads


def _conflicting(num_tasks, seed):
  rng = np.random.default_rng(seed)
  grads = rng.normal(size=(num_tasks, 6)) * rng.uniform(0.2, 5.0, (num_tasks, 1))
  grads[0] = -0.7 * grads[1:].sum(axis=0) + 0.3 * grads[0]
  return grads.astype(np.float32)


def test_worked_example():
  # METHODS.md: J = [[-4, 1, 1], [6, 1, 1]] -> α* = [0.6, 0.4], d = [0, 1, 1].
  grads = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
  updates, state = _step(2)(grads, None)
  np.testing.assert_allclose(state.weights, [0.6, 0.4], rtol=1e-7)
  np.testing.assert_allclose(updates, [0.0, 1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize('normalization', ['none', 'l2', 'loss', 'loss+'])
def test_normalisations_choose_weights_and_raw_gradients_combine(normalization):
  losses = np.array([0.5, 2.0, 1.5, 4.0], np.float32)
  for seed in range(2):
    grads = _conflicting(4, seed)
    expected_weights, expected_update = _numpy_mgda(grads, losses,
                                                    normalization)
    updates, state = _step(4, normalization)(jnp.asarray(grads),
                                             jnp.asarray(losses))
    np.testing.assert_allclose(state.weights, expected_weights, atol=2e-4)
    # The update is Σ α_t g_t with the *raw* gradients (Decision).
    np.testing.assert_allclose(
        updates, np.asarray(state.weights, np.float64) @ grads, rtol=1e-5,
        atol=1e-5)
    np.testing.assert_allclose(updates, expected_update, atol=2e-3)


def test_l2_normalisation_by_hand():
  # g_1 = [2, 0], g_2 = [0, 1]: unit gradients are orthogonal, α = [½, ½],
  # and the raw update is ½ g_1 + ½ g_2 = [1, ½]. Without normalisation,
  # α = [1/5, 4/5] (closed form: (1 − 0) / (4 + 1)) and d = [0.4, 0.8].
  grads = jnp.array([[2.0, 0.0], [0.0, 1.0]])
  updates, state = _step(2, 'l2')(grads, None)
  np.testing.assert_allclose(state.weights, [0.5, 0.5])
  np.testing.assert_allclose(updates, [1.0, 0.5])
  updates, state = _step(2)(grads, None)
  np.testing.assert_allclose(state.weights, [0.2, 0.8], rtol=1e-6)
  np.testing.assert_allclose(updates, [0.4, 0.8], rtol=1e-6)


@pytest.mark.parametrize('seed', range(4))
def test_non_conflicting_without_normalisation(seed):
  grads = _conflicting(5, seed)
  updates, state = _step(5)(jnp.asarray(grads), None)
  alignment = grads.astype(np.float64) @ np.asarray(updates, np.float64)
  # g_t · d >= ‖d‖² >= 0 at the min-norm point (up to the solver's gap).
  norm_sq = float(np.sum(np.asarray(updates, np.float64) ** 2))
  scale = np.max(np.sum(grads.astype(np.float64) ** 2, axis=1))
  assert np.all(alignment >= norm_sq - 1e-5 * scale), alignment
  np.testing.assert_allclose(np.sum(state.weights), 1.0, atol=1e-6)


def test_permuting_tasks_permutes_weights():
  grads = _conflicting(5, seed=11)
  permutation = np.array([4, 2, 0, 1, 3])
  updates, state = _step(5)(jnp.asarray(grads), None)
  permuted_updates, permuted_state = _step(5)(jnp.asarray(grads[permutation]),
                                              None)
  np.testing.assert_allclose(permuted_state.weights,
                             np.asarray(state.weights)[permutation], atol=1e-5)
  np.testing.assert_allclose(permuted_updates, updates, atol=1e-5)


def test_zero_gradient_gives_zero_update():
  # 0 in the hull: the min-norm point is 0 (Pareto-stationary), for 'none'
  # and 'l2' alike (a zero gradient normalises to 0).
  grads = _conflicting(3, seed=0)
  grads[1] = 0.0
  for normalization in ('none', 'l2'):
    updates, state = _step(3, normalization)(jnp.asarray(grads), None)
    np.testing.assert_allclose(updates, 0.0, atol=1e-6)
    np.testing.assert_allclose(state.weights, [0.0, 1.0, 0.0], atol=1e-6)
  updates, state = _step(3, 'l2')(jnp.zeros((3, 6)), None)
  np.testing.assert_array_equal(updates, 0.0)
  assert np.all(np.isfinite(state.weights))


def test_loss_normalisation_floors_non_positive_losses():
  grads = _conflicting(3, seed=2)
  for losses in ([0.0, 1.0, 2.0], [-1.0, 1.0, 2.0]):
    updates, state = _step(3, 'loss')(jnp.asarray(grads),
                                      jnp.asarray(losses, jnp.float32))
    assert np.all(np.isfinite(updates)) and np.all(np.isfinite(state.weights))
    # A floored loss of 1e-8 blows task 0's normalised gradient up, so it
    # is the farthest vertex and gets no weight.
    assert float(state.weights[0]) < 1e-6


def test_task_specific_leaves_get_their_own_gradient():
  grads = {'shared': jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]),
           'head': jnp.array([[1.0, 2.0], [3.0, 4.0]])}
  tx = mtl.mgda(2, task_specific={'shared': False, 'head': True})
  updates, state = jax.jit(tx.update)(grads, tx.init(None))
  np.testing.assert_allclose(state.weights, [0.6, 0.4], rtol=1e-7)
  np.testing.assert_allclose(updates['head'], [4.0, 6.0])


def test_missing_losses_and_bad_arguments_are_rejected():
  with pytest.raises(ValueError, match='losses'):
    _step(2, 'loss')(jnp.ones((2, 3)), None)
  with pytest.raises(ValueError, match='normalization'):
    mtl.mgda(2, normalization='l1')
  with pytest.raises(ValueError, match='max_iters'):
    mtl.mgda(2, max_iters=0)
  with pytest.raises(ValueError, match='tol'):
    mtl.mgda(2, tol=-1e-3)
