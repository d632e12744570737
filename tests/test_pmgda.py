"""PMGDA: the prediction (tangent MGDA) and correction (linear program) steps.

Expected values are worked by hand from the paper's prediction problem
(eq. 11) and from libmoon's correction program (``pmgda_solver.py``,
``solve_pmgda``: maximise ``min_i g_iᵀd`` over mixes ``d`` of the unit
gradients and the unit ``∇h`` with ``∇hᵀd >= σ‖∇h‖``; weights by eq. 18).
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from mtl_optax._src.solvers import linear_program


def _update(tx, grads, losses):
  return tx.update(jnp.asarray(grads), tx.init(None),
                   task_losses=jnp.asarray(losses))


def test_on_the_ray_the_prediction_is_mgda():
  # L = [1, 1] lies on the uniform ray: h = 0, no slope, plain MGDA.
  updates, state = _update(mtl.pmgda(2), np.eye(2, dtype=np.float32),
                           [1.0, 1.0])
  np.testing.assert_allclose(updates, [0.5, 0.5], rtol=1e-6)


def test_prediction_stays_in_the_tangent_space():
  # g_1 = (1, 0, 1), g_2 = (0, 2, 0); L = [1, 1.01] is 0.005 √2 < 0.01 from
  # the ray, a = (−1, 1)/√2, ∇h = Jᵀa, ‖∇h‖² = aᵀGa = 3, Ga = (−√2, 2√2).
  # With two tasks both gradients project off ∇h onto the same vector, so
  # any μ is optimal (μ = ½ here) and ν = −aᵀGμ / 3 = −(√2/2)/3; then
  # w = μ + ν a = [2/3, 1/3] and d = (2/3, 2/3, 2/3), with ∇hᵀd = 0.
  grads = np.array([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]], np.float32)
  updates, state = _update(mtl.pmgda(2), grads, [1.0, 1.01])
  np.testing.assert_allclose(state.weights, [2 / 3, 1 / 3], rtol=1e-5)
  np.testing.assert_allclose(updates, [2 / 3, 2 / 3, 2 / 3], rtol=1e-5)


def test_correction_solves_the_linear_program():
  # J = I, L = [1, 2]: h = ‖[−½, ½]‖ = 1/√2 > 0.01, a = (−1, 1)/√2 = ∇ĥ.
  # d = μ_1 e_1 + μ_2 e_2 + μ_3 a with ∇hᵀd = (μ_2 − μ_1)/√2 + μ_3 >= 0.95.
  # min(g_1ᵀd, g_2ᵀd) = μ_1 − μ_3/√2 <= μ_1 − 0.5864 − 3.414 μ_1 (from the
  # constraint with μ_2 = 1 − μ_1 − μ_3), largest at μ_1 = 0: μ_3 =
  # (0.95 − 1/√2) / (1 − 1/√2) = 0.8292893, μ_2 = 0.1707107, and
  # d = (−μ_3/√2, μ_2 + μ_3/√2) = (−0.5863961, 0.7571068).
  mu3 = (0.95 - 1 / math.sqrt(2)) / (1 - 1 / math.sqrt(2))
  np.testing.assert_allclose(mu3, 0.8292893, rtol=1e-6)
  expected = [-mu3 / math.sqrt(2), 1 - mu3 + mu3 / math.sqrt(2)]
  np.testing.assert_allclose(expected, [-0.5863961, 0.7571068], rtol=1e-6)
  updates, state = _update(mtl.pmgda(2), np.eye(2, dtype=np.float32),
                           [1.0, 2.0])
  np.testing.assert_allclose(updates, expected, rtol=1e-5)
  # The update lowers h at rate σ‖∇h‖ = 0.95 (here ∇h = a).
  np.testing.assert_allclose(np.dot(updates, [-1, 1]) / math.sqrt(2), 0.95,
                             rtol=1e-5)


def test_correction_scales_out_of_the_gradients():
  # The correction mixes unit vectors: scaling every gradient leaves d.
  grads = np.array([[3.0, 1.0], [0.5, 2.0]], np.float32)
  first, _ = _update(mtl.pmgda(2), grads, [1.0, 3.0])
  second, _ = _update(mtl.pmgda(2), 1e3 * grads, [1.0, 3.0])
  np.testing.assert_allclose(second, first, rtol=1e-5)


def test_linear_program_solves_a_textbook_problem():
  # Hillier and Lieberman's Wyndor problem: max 3x + 5y s.t. x <= 4,
  # 2y <= 12, 3x + 2y <= 18: optimum (2, 6), slacks (2, 0, 0), value 36.
  matrix = jnp.array([[1.0, 0.0, 1.0, 0.0, 0.0],
                      [0.0, 2.0, 0.0, 1.0, 0.0],
                      [3.0, 2.0, 0.0, 0.0, 1.0]])
  result = linear_program.solve(
      matrix, jnp.array([4.0, 12.0, 18.0]),
      jnp.array([3.0, 5.0, 0.0, 0.0, 0.0]), jnp.array([2, 3, 4]),
      max_iters=20)
  np.testing.assert_allclose(result.weights, [2.0, 6.0, 2.0, 0.0, 0.0],
                             atol=1e-5)
  assert bool(result.converged)


def test_invalid_arguments_raise():
  with pytest.raises(ValueError, match='preference'):
    mtl.pmgda(2, preference=[1.0, -1.0])
  with pytest.raises(ValueError, match='preference'):
    mtl.pmgda(2, preference=[1.0, 1.0, 1.0])
  with pytest.raises(ValueError, match='sigma'):
    mtl.pmgda(2, sigma=1.5)
  tx = mtl.pmgda(2)
  with pytest.raises(ValueError, match='task_losses'):
    tx.update(jnp.eye(2), tx.init(None))
