"""PCD: TorchJD 0.18 values (issue 12), hand-derived solutions of the
quadratic program, and its KKT conditions on random Gramians."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from mtl_optax._src.solvers import pcd as pcd_solver

J2 = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
J5 = jnp.array([[-4.0, 1, 1, 0], [6, 1, 1, 2], [1, -2, 0, 1],
                [0.5, 0.5, 3, -1], [2, 2, 2, 2]])


@pytest.mark.parametrize('matrix, expected', [
    (J2, [-0.82, 2.9434, 2.9434]),  # TorchJD 0.18 PCD(), first step.
    (J5, [-1.3334, 0.5608, 2.7869, 2.8533]),  # Same, on J5.
])
def test_torchjd_first_step(matrix, expected):
  tx = mtl.pcd(matrix.shape[0])
  updates, _ = jax.jit(tx.update)(matrix, tx.init(None))
  np.testing.assert_allclose(updates, expected, atol=1e-4)


def test_an_inactive_constraint_gives_the_primary_gradient():
  # g1 = [1, 0], g2 = [1, 1]: g̃2ᵀg̃1 = 1/√2 >= τ‖g̃2‖² = .02, so d̃ = g̃1
  # and d = g1.
  tx = mtl.pcd(2, eps=0.0)
  updates, state = tx.update(jnp.array([[1.0, 0.0], [1.0, 1.0]]),
                             tx.init(None))
  np.testing.assert_allclose(state.weights, [1.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(updates, [1.0, 0.0], atol=1e-6)


def test_an_active_constraint_and_the_moving_average():
  # τ = .5, β = .5, ε = 0. Step 1: g1 = [1, 0], g2 = [-1, 1]; v̂ = ‖g‖²
  # so g̃1 = [1, 0], g̃2 = [-1, 1]/√2, ‖g̃2‖ = 1. The constraint
  # g̃2ᵀd >= .5 fails at d = g̃1 (−1/√2), so it is tight:
  # d̃ = g̃1 + μ g̃2 with −1/√2 + μ = .5, μ = .5 + 1/√2;
  # d̃ = [1 − μ/√2, μ/√2] = [.5 − 1/(2√2), .5 + 1/(2√2)], ‖d̃‖² = .75,
  # d = d̃ ‖g1‖/‖d̃‖ = d̃/√.75.
  tx = mtl.pcd(2, tau=0.5, beta=0.5, eps=0.0)
  g1, g2 = jnp.array([1.0, 0.0]), jnp.array([-1.0, 1.0])
  updates, state = tx.update(jnp.stack([g1, g2]), tx.init(None))
  half_root = 1 / (2 * np.sqrt(2))
  np.testing.assert_allclose(
      updates, np.array([0.5 - half_root, 0.5 + half_root]) / np.sqrt(0.75),
      rtol=1e-5)
  # Step 2 with g2 doubled: v₂ = .5·.5·2 + .5·8 = 4.5 after v₂ = .5·2 = 1,
  # debiased by 1 − .5² = .75: v̂₂ = 6 (v̂₁ = 1), so g̃2 = 2[-1, 1]/√6,
  # ‖g̃2‖² = 4/3 and the constraint reads g̃2ᵀd >= 2/3. At d = g̃1 it is
  # −2/√6 < 2/3: tight, −2/√6 + μ 4/3 = 2/3, μ 2/√6 = 1/√6 + 1/2, so
  # d̃ = [.5 − 1/√6, .5 + 1/√6], ‖d̃‖² = .5 + 1/3 = 5/6, d = d̃/√(5/6).
  # (Normalising by the current norm alone would repeat step 1.)
  updates, state = tx.update(jnp.stack([g1, 2 * g2]), state)
  np.testing.assert_allclose(state.weighting_state.squared_norm_ema,
                             [0.75, 4.5], rtol=1e-6)
  inverse_root6 = 1 / np.sqrt(6)
  np.testing.assert_allclose(
      updates, np.array([0.5 - inverse_root6, 0.5 + inverse_root6])
      / np.sqrt(5 / 6), rtol=1e-5)


def test_infeasible_constraints_are_dropped():
  # g2 = [0, 1] and g3 = [0, −1] cannot both see progress: d = g1.
  tx = mtl.pcd(3)
  grads = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
  updates, state = tx.update(grads, tx.init(None))
  np.testing.assert_allclose(state.weights, [1.0, 0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(updates, [1.0, 0.0], atol=1e-6)


def test_a_zero_primary_gradient_gives_a_zero_update():
  tx = mtl.pcd(3)
  grads = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
  updates, state = tx.update(grads, tx.init(None))
  np.testing.assert_array_equal(updates, [0.0, 0.0])


def test_per_task_tau():
  # τ = [0, .5] on g2 = [1, 1], g3 = [−1, 1] (normalised: norm 1 after
  # division by √2) with g1 = [1, 0]: g̃2ᵀg̃1 = 1/√2 >= 0, g̃3ᵀg̃1 = −1/√2 < .5,
  # so only g3's constraint is tight: d̃ = g̃1 + μ g̃3 as in the two-task case
  # above, and g̃2ᵀd̃ = [1, 1]/√2 · d̃ = 1/√2 > 0 holds.
  tx = mtl.pcd(3, tau=[0.0, 0.5], eps=0.0)
  grads = jnp.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 1.0]])
  updates, _ = tx.update(grads, tx.init(None))
  half_root = 1 / (2 * np.sqrt(2))
  np.testing.assert_allclose(
      updates, np.array([0.5 - half_root, 0.5 + half_root]) / np.sqrt(0.75),
      rtol=1e-5)


@pytest.mark.parametrize('seed', range(5))
def test_solver_meets_the_kkt_conditions(seed):
  rng = np.random.default_rng(seed)
  num_tasks = 7
  matrix = rng.normal(size=(num_tasks, 12))
  matrix[1:] -= 0.6 * matrix[0]  # Secondary tasks conflict with the primary.
  gram = matrix @ matrix.T
  gram /= np.max(np.diag(gram))
  taus = np.full(num_tasks - 1, 0.2)
  solution = pcd_solver.solve(jnp.asarray(gram, jnp.float32),
                              jnp.asarray(taus, jnp.float32),
                              max_iters=pcd_solver.default_max_iters(num_tasks))
  assert bool(solution.converged)
  weights = np.asarray(solution.weights, np.float64)
  assert weights[0] == 1.0 and np.all(weights[1:] >= 0)
  # Primal feasibility g_jᵀd >= τ‖g_j‖², complementary slackness.
  slack = (gram @ weights)[1:] - taus * np.diag(gram)[1:]
  assert np.all(slack >= -1e-5), slack
  np.testing.assert_allclose(weights[1:] * slack, 0.0, atol=1e-5)


@pytest.mark.parametrize('kwargs, match', [
    ({'tau': 1.5}, 'tau'),
    ({'tau': [0.1, 2.0]}, 'tau'),
    ({'tau': [0.1]}, 'tau has 1 values'),
    ({'beta': 1.0}, 'beta'),
    ({'eps': -1.0}, 'eps'),
    ({'max_iters': 0}, 'max_iters'),
])
def test_invalid_hyperparameters_are_rejected_at_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mtl.pcd(3, **kwargs)
