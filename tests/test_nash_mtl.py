"""Nash-MTL: the bargaining solver against float64 NumPy, the cap, the period."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from fair_allocation_reference import newton_root
from fair_allocation_reference import solvable_jacobian as _solvable_jacobian

J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], np.float32)


@functools.lru_cache(maxsize=None)
def _transform(num_tasks, max_norm=0.0, update_weights_every=1):
  tx = mtl.nash_mtl(num_tasks, max_norm=max_norm,
                    update_weights_every=update_weights_every)
  return tx, jax.jit(tx.update)


def _update(grads, state=None, **kwargs):
  grads = jnp.asarray(grads, jnp.float32)
  tx, update = _transform(grads.shape[0], **kwargs)
  state = tx.init(grads[0]) if state is None else state
  return update(grads, state)


def reference_alpha(gram):
  """float64 root of G α = 1/α on the raw Gramian: FairGrad's system at α = 1."""
  return newton_root(gram, 1.0)


def test_orthogonal_gradients_by_hand():
  # Issue 16's reproducer. G = diag(9, 16): α_t² G_tt = 1, α = (1/3, 1/4), so
  # d = (3·1/3, 4·1/4) = (1, 1), the closed form on orthogonal gradients
  # (the paper's system; TorchJD gives the same). Before the fix the Gramian
  # was divided by ‖G‖_F = √337 and d was 337^{1/4} (1, 1) ≈ (4.28, 4.28).
  update, state = _update(np.array([[3.0, 0.0], [0.0, 4.0]]))
  np.testing.assert_allclose(state.weights, [1 / 3, 1 / 4], rtol=1e-5)
  np.testing.assert_allclose(update, [1.0, 1.0], rtol=1e-5)


@pytest.mark.parametrize(
    'num_tasks', [2] + [pytest.param(t, marks=pytest.mark.slow)
                        for t in (3, 5)])
def test_equals_fairgrad_with_alpha_one(num_tasks):
  # The docstring's claim: Nash-MTL (no cap) is FairGrad at α = 1.
  fair = mtl.fairgrad(num_tasks, alpha=1.0)
  for seed in range(4):
    jacobian = jnp.asarray(_solvable_jacobian(num_tasks, seed)
                           * np.exp(np.random.default_rng(seed).normal(
                               size=(num_tasks, 1))), jnp.float32)
    update, state = _update(jacobian)
    fair_update, fair_state = fair.update(jacobian, fair.init(jacobian[0]))
    np.testing.assert_allclose(state.weights, fair_state.weights, rtol=1e-5)
    np.testing.assert_allclose(update, fair_update, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('num_tasks', [2, 3, 6])
def test_weights_match_float64_reference_and_residual(num_tasks):
  for seed in range(3):
    jacobian = _solvable_jacobian(num_tasks, seed)
    gram = jacobian @ jacobian.T
    update, state = _update(jacobian)
    alpha = np.asarray(state.weights, np.float64)
    np.testing.assert_allclose(alpha, reference_alpha(gram), rtol=1e-4)
    assert np.linalg.norm(gram @ alpha - 1 / alpha) < 1e-4 * np.linalg.norm(
        1 / alpha)
    # Every task improves: g_t · d = 1 / α_t > 0.
    np.testing.assert_allclose(jacobian @ np.asarray(update, np.float64),
                               1 / alpha, rtol=1e-4)


def test_reference_matrix():
  # On issue 6's J, Nash-MTL is FairGrad at α = 1: its reference weights
  # [0.5915, 0.4071] (issue 6). The old √‖G‖_F factor (issue 16) is gone.
  _, state = _update(J)
  np.testing.assert_allclose(state.weights, [0.5915, 0.4071], atol=1e-4)


def test_max_norm_caps_the_update_norm():
  # Uncapped, ‖d‖ on J is ≈ 1.41 (> 1): capped to exactly max_norm = 1.
  free, free_state = _update(J)
  capped, capped_state = _update(J, max_norm=1.0)
  np.testing.assert_allclose(np.linalg.norm(capped), 1.0, rtol=1e-5)
  np.testing.assert_allclose(capped, np.asarray(free) / np.linalg.norm(free),
                             rtol=1e-5)
  # The stored α is the uncapped one; the weights carry the cap.
  np.testing.assert_allclose(capped_state.weighting_state.alpha,
                             free_state.weighting_state.alpha, rtol=1e-6)
  # A cap above ‖d‖ changes nothing.
  loose, _ = _update(J, max_norm=100.0)
  np.testing.assert_allclose(loose, free, rtol=1e-6)


def test_update_weights_every_reuses_alpha_between_solves():
  period = 3
  grads = [_solvable_jacobian(3, seed) for seed in range(5)]
  state = None
  for step, jacobian in enumerate(grads):
    update, state = _update(jacobian, state, update_weights_every=period)
    assert int(state.weighting_state.count) == step + 1
    solved_at = step - step % period  # Steps 0 and 3 solve.
    expected_alpha = reference_alpha(grads[solved_at] @ grads[solved_at].T)
    np.testing.assert_allclose(state.weighting_state.alpha, expected_alpha,
                               rtol=1e-4)
    # The stored α weighs the *current* gradients.
    np.testing.assert_allclose(update, expected_alpha @ jacobian, rtol=1e-4,
                               atol=1e-5)


def test_zero_norm_task_gets_zero_weight():
  # g_2 = 0: decoupled, weight 0; task 1 alone: 25 α_1² = 1, α_1 = 1/5.
  update, state = _update(np.array([[3.0, 4.0], [0.0, 0.0]]))
  np.testing.assert_allclose(state.weights, [0.2, 0.0], atol=1e-6)
  np.testing.assert_allclose(update, [0.6, 0.8], rtol=1e-5)


def test_opposite_gradients_give_a_finite_near_zero_update():
  # No bargaining solution exists (0 is in the convex hull); the ridge gives
  # finite weights and an update ≈ 0 compared with the gradients.
  grads = np.array([[1.0, 2.0], [-1.0, -2.0]])
  update, state = _update(grads)
  assert np.all(np.isfinite(state.weights)) and np.all(state.weights > 0)
  assert np.linalg.norm(update) < 1e-2 * np.linalg.norm(grads[0])


def test_invalid_arguments_are_rejected():
  with pytest.raises(ValueError, match='max_norm'):
    mtl.nash_mtl(2, max_norm=-1.0)
  with pytest.raises(ValueError, match='update_weights_every'):
    mtl.nash_mtl(2, update_weights_every=0)
