"""CAGrad: reference values, the dual solver against float64 NumPy, properties."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from mtl_optax._src.methods import cagrad as cagrad_lib

J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], np.float32)


@functools.lru_cache(maxsize=None)
def _update(num_tasks, c=0.5, rescale='none'):
  tx = mtl.cagrad(num_tasks, c=c, rescale=rescale)
  step = jax.jit(lambda grads: tx.update(grads, tx.init(grads[0]))[0:2])
  return lambda grads: step(jnp.asarray(grads, jnp.float32))


_solve_dual = jax.jit(functools.partial(cagrad_lib.solve_dual, max_iters=1000,
                                        tol=1e-6))


def _random_jacobian(num_tasks, seed):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(num_tasks, 7)) + 0.2 * rng.normal(size=7)


def _dual_objective(jacobian, w, c):
  """g_wᵀg_0 + c‖g_0‖‖g_w‖ in float64."""
  mean = jacobian.mean(axis=0)
  combined = w @ jacobian
  return combined @ mean + c * np.linalg.norm(mean) * np.linalg.norm(combined)


def _nested_ternary_minimum(objective, low=0.0, high=1.0, iters=100):
  """Minimum of a convex function of one variable on [low, high]."""
  for _ in range(iters):
    third = (high - low) / 3
    if objective(low + third) <= objective(high - third):
      high -= third
    else:
      low += third
  point = 0.5 * (low + high)
  return point, objective(point)


def _reference_dual_three_tasks(jacobian, c):
  """float64 argmin over the 2-simplex by nested ternary search.

  The inner minimum of a jointly convex function is convex in the outer
  variable, so the nested search converges; an independent method from the
  library's projected gradient.
  """
  def inner(first):
    objective = lambda s: _dual_objective(
        jacobian, np.array([first, (1 - first) * s, (1 - first) * (1 - s)]), c)
    return _nested_ternary_minimum(objective, iters=60)

  first, _ = _nested_ternary_minimum(lambda a: inner(a)[1], iters=60)
  share, _ = inner(first)
  return np.array([first, (1 - first) * share, (1 - first) * (1 - share)])


def test_reference_values():
  # Issue 6 reference (J rows are task gradients, c = 0.5, tolerance 1e-4):
  # the mean g_0 and no rescaling reproduce them.
  update, state = _update(2)(J)
  np.testing.assert_allclose(update, [0.1835, 1.2041, 1.2041], atol=1e-4)
  np.testing.assert_allclose(state.weights, [0.7041, 0.5], atol=1e-4)


def test_reference_values_by_hand():
  # Hand derivation: g_0 = [1, 1, 1]; with w = (1 - t, t), g_wᵀg_0 = 6 - 10(1-t)
  # + 2 grows with t faster than c‖g_0‖‖g_w‖ can fall, so w* = e_1 and
  # λ = c‖g_0‖/‖g_1‖ = 0.5·√3/√18.
  step = 0.5 * np.sqrt(3.0) / np.sqrt(18.0)
  update, state = _update(2)(J)
  np.testing.assert_allclose(state.weights, [0.5 + step, 0.5], rtol=1e-6)
  np.testing.assert_allclose(update, J.mean(0) + step * J[0], rtol=1e-6)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_dual_matches_float64_nested_search(seed):
  jacobian = _random_jacobian(3, seed)
  for c in (0.2, 0.5, 0.9):
    w = np.asarray(_solve_dual(jnp.asarray(jacobian @ jacobian.T, jnp.float32),
                               c), np.float64)
    reference = _reference_dual_three_tasks(jacobian, c)
    # Objective values agree to float32 accuracy; the minimiser to ~1e-3
    # (the objective is flat along some directions near a kink).
    np.testing.assert_allclose(_dual_objective(jacobian, w, c),
                               _dual_objective(jacobian, reference, c),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w, reference, atol=2e-3)


@pytest.mark.parametrize(
    'num_tasks', [2, 5, pytest.param(8, marks=pytest.mark.slow)])
def test_strong_duality_certifies_the_update(num_tasks):
  # For any d in the ball and any w in the simplex, min_t g_t·d <= F(w)
  # (weak duality); equality at the returned pair certifies both optimal.
  # Checked in float64 on the float32 outputs.
  for seed in range(3):
    jacobian = _random_jacobian(num_tasks, seed)
    gram = jnp.asarray(jacobian @ jacobian.T, jnp.float32)
    w = np.asarray(_solve_dual(gram, 0.5), np.float64)
    update, state = _update(num_tasks)(jacobian)
    update = np.asarray(update, np.float64)
    mean = jacobian.mean(axis=0)
    scale = np.linalg.norm(mean) * np.max(np.linalg.norm(jacobian, axis=1))
    np.testing.assert_allclose(np.sum(w), 1.0, atol=1e-6)
    assert np.all(w >= 0)
    # d is on the sphere ‖d − g_0‖ = c‖g_0‖.
    np.testing.assert_allclose(np.linalg.norm(update - mean),
                               0.5 * np.linalg.norm(mean), rtol=1e-4)
    primal = np.min(jacobian @ update)
    dual = _dual_objective(jacobian, w, 0.5)
    assert abs(primal - dual) <= 1e-5 * scale, (primal, dual)
    np.testing.assert_allclose(np.asarray(state.weights) @ jacobian, update,
                               rtol=1e-5, atol=1e-6)


def test_c_zero_is_the_mean_gradient():
  update, state = _update(2, c=0.0)(J)
  np.testing.assert_allclose(state.weights, [0.5, 0.5])
  np.testing.assert_allclose(update, J.mean(0), rtol=1e-6)


@pytest.mark.parametrize('rescale, divisor',
                         [('one_plus_c_squared', 1.25), ('one_plus_c', 1.5)])
def test_rescale_divides_the_paper_update(rescale, divisor):
  plain, _ = _update(2)(J)
  rescaled, _ = _update(2, rescale=rescale)(J)
  np.testing.assert_allclose(rescaled, np.asarray(plain) / divisor, rtol=1e-6)


def test_one_task_moves_by_one_plus_c():
  # T = 1: g_w = g_0 = g_1 and λ = c, so d = (1 + c) g_1.
  grads = np.array([[3.0, -4.0]])
  update, _ = _update(1)(grads)
  np.testing.assert_allclose(update, 1.5 * grads[0], rtol=1e-6)


def test_zero_task_gradient_falls_back_to_the_mean():
  # g_2 = 0: the dual is minimised at w = e_2 (g_w = 0, objective 0 while
  # w = e_1 gives 0.5 + 0.25 > 0), the correction has no direction: d = g_0.
  grads = np.array([[1.0, 0.0], [0.0, 0.0]])
  update, state = _update(2)(grads)
  np.testing.assert_allclose(update, [0.5, 0.0], atol=1e-6)
  assert np.all(np.isfinite(state.weights))


def test_invalid_arguments_are_rejected():
  with pytest.raises(ValueError, match='c'):
    mtl.cagrad(2, c=-0.1)
  with pytest.raises(ValueError, match='rescale'):
    mtl.cagrad(2, rescale='sum')
  with pytest.raises(ValueError, match='max_iters'):
    mtl.cagrad(2, max_iters=0)


def test_opposite_collinear_gradients_issue_24():
  # Issue 24: T = 2, g_2 = −0.5 g_1, c = 0.5. Hand derivation: with
  # w = (1 − s, s), g_w = (1 − 1.5 s) g_1 ranges over [−0.5, 1]·g_1; g_0 =
  # 0.25 g_1, r = c‖g_0‖ = 0.125 ‖g_1‖, so (‖g_1‖ = 1 units)
  # F = 0.25 u + 0.125 |u| for g_w = u g_1, minimised at u = −0.5 (F =
  # −0.0625 < 0: not at g_w = 0). d = g_0 + r g_w/‖g_w‖ = 0.25 g_1 − 0.125 g_1
  # = 0.125 g_1 (TorchJD, LibMTL and a float64 solve agree, issue 24); the
  # solver used to return g_0 = 0.25 g_1.
  g1 = np.array([1.0, 2.0, -0.5], np.float32)
  update, state = _update(2)(np.stack([g1, -0.5 * g1]))
  np.testing.assert_allclose(update, 0.125 * g1, rtol=1e-5)
  # Weights: 1/2 + λ w* with w* = e_2, λ = 0.125 / 0.5 = 0.25.
  np.testing.assert_allclose(state.weights, [0.5, 0.75], rtol=1e-5)
  # Same family, norms four decades apart: g_2 = −1e-4 g_1, so u ranges
  # over [−1e-4, 1], g_0 = 0.49995 g_1, r = 0.249975, d = g_0 − r g_1 =
  # 0.249975 g_1.
  update, _ = _update(2)(np.stack([g1, np.float32(-1e-4) * g1]))
  np.testing.assert_allclose(update, 0.249975 * g1, rtol=1e-4)
  # c = 2 > 1: F = 0.25 u + 0.5 |u| >= 0, minimum at g_w = 0, d = g_0.
  update, _ = _update(2, c=2.0)(np.stack([g1, -0.5 * g1]))
  np.testing.assert_allclose(update, 0.25 * g1, rtol=1e-5)
