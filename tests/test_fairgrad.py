"""FairGrad: reference values, the Newton solver against float64 NumPy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_optax as mtl
from fair_allocation_reference import newton_root as reference_weights
from fair_allocation_reference import solvable_jacobian as _solvable_jacobian

J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], np.float32)


@functools.lru_cache(maxsize=None)
def _compiled(num_tasks):
  """One compilation per task count: ``alpha`` is an injected hyper-parameter."""
  tx = optax.inject_hyperparams(
      mtl.fairgrad, static_args=('num_tasks', 'max_iters'))(num_tasks,
                                                            alpha=1.0)

  def step(grads, alpha):
    state = tx.init(grads[0])
    state.hyperparams['alpha'] = alpha
    updates, state = tx.update(grads, state)
    return updates, state.inner_state

  return jax.jit(step)


def _update(grads, alpha=1.0):
  grads = jnp.asarray(grads, jnp.float32)
  return _compiled(grads.shape[0])(grads, jnp.float32(alpha))


def test_reference_values():
  # Issue 6 reference (alpha = 1, tolerance 1e-4).
  update, state = _update(J)
  np.testing.assert_allclose(update, [0.0766, 0.9985, 0.9985], atol=1e-4)
  np.testing.assert_allclose(state.weights, [0.5915, 0.4071], atol=1e-4)


@pytest.mark.parametrize('alpha', [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize('num_tasks', [3, 5])
def test_weights_match_float64_newton_reference(alpha, num_tasks):
  for seed in range(2):
    jacobian = _solvable_jacobian(num_tasks, seed)
    gram = jacobian @ jacobian.T
    _, state = _update(jacobian, alpha)
    weights = np.asarray(state.weights, np.float64)
    # The library's ridge (1e-6 per task) and float32 bound the agreement.
    np.testing.assert_allclose(weights, reference_weights(gram, alpha),
                               rtol=2e-4)
    demand = weights ** (-1.0 / alpha)
    assert np.max(np.abs(gram @ weights - demand) / demand) < 2e-4


def test_every_task_improves_by_its_fair_share():
  # g_t · d = w_t^{-1/α} > 0 (the optimality condition), α = 2.
  jacobian = _solvable_jacobian(4, 7)
  update, state = _update(jacobian, 2.0)
  alignment = jacobian @ np.asarray(update, np.float64)
  np.testing.assert_allclose(alignment,
                             np.asarray(state.weights, np.float64) ** -0.5,
                             rtol=2e-4)


@pytest.mark.parametrize('alpha', [1.0, 3.0])
def test_update_scales_like_c_to_the_fairness_power(alpha):
  # G → c²G gives w → c^{−2α/(1+α)} w, so d → c^{(1−α)/(1+α)} d (by hand).
  jacobian = _solvable_jacobian(3, 1)
  update, _ = _update(jacobian, alpha)
  for factor in (1e-6, 1e6):
    scaled, _ = _update(factor * jacobian, alpha)
    np.testing.assert_allclose(
        scaled, factor ** ((1 - alpha) / (1 + alpha)) * np.asarray(update),
        rtol=1e-4)


def test_one_task():
  # T = 1: ‖g‖² w = w^{-1/α}, so w = ‖g‖^{−2α/(1+α)}; ‖g‖ = 5, α = 1: 1/5.
  update, state = _update(np.array([[3.0, 4.0]]))
  np.testing.assert_allclose(state.weights, [0.2], rtol=1e-5)
  np.testing.assert_allclose(update, [0.6, 0.8], rtol=1e-5)


def test_zero_norm_task_gets_zero_weight_and_leaves_others_alone():
  # g_2 = 0: its equation has no root; task 1 alone: w_1 = 1/‖g_1‖ = 0.2.
  _, state = _update(np.array([[3.0, 4.0], [0.0, 0.0]]))
  np.testing.assert_allclose(state.weights, [0.2, 0.0], rtol=1e-5)


def test_opposite_gradients_give_a_finite_near_zero_update():
  # No root exists (0 is in the convex hull); the ridge gives finite weights
  # and an update ≈ 0 compared with the gradients.
  grads = np.array([[1.0, 2.0], [-1.0, -2.0]])
  update, state = _update(grads)
  assert np.all(np.isfinite(state.weights)) and np.all(state.weights > 0)
  assert np.linalg.norm(update) < 1e-2 * np.linalg.norm(grads[0])


def test_invalid_arguments_are_rejected():
  with pytest.raises(ValueError, match='alpha'):
    mtl.fairgrad(2, alpha=0.0)
  with pytest.raises(ValueError, match='max_iters'):
    mtl.fairgrad(2, max_iters=0)
