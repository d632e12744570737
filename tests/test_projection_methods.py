"""PCGrad, IMTL, UPGrad, DualProj, Aligned-MTL, ConFIG and the dual-cone solver.

Expected values come from the issue's reference table (J = [[-4, 1, 1],
[6, 1, 1]]), from float64 NumPy references written here from each paper's
definition (on the gradients themselves, not on the Gramian where possible),
or from the KKT conditions. Everything runs under ``jax.jit``.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_optax as mtl
from mtl_optax._src.solvers import spectral
from mtl_optax._src.solvers import dual_cone

REFERENCE_J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], np.float32)


@functools.lru_cache(maxsize=None)
def _jitted_update(tx):
  return jax.jit(lambda g, s, l: tx.update(g, s, task_losses=l))


def _update(tx, grads, state=None, losses=None):
  state = tx.init(jnp.zeros(grads.shape[1:])) if state is None else state
  return _jitted_update(tx)(jnp.asarray(grads), state, losses)


def _random_problem(seed, num_tasks=4, dim=8):
  """Rows with conflicts: task 0 points against the sum of the others."""
  matrix = np.random.default_rng(seed).normal(size=(num_tasks, dim))
  matrix[0] = -0.8 * matrix[1:].sum(axis=0) + 0.3 * matrix[0]
  return matrix


# ---------------------------------------------------------------------------
# Reference values of issue 6 (weights: coefficients of the rows of J).


@pytest.mark.parametrize('name, tx, update, weights', [
    ('pcgrad', mtl.pcgrad(2), [0.5848, 3.8012, 3.8012], [2.2222, 1.5789]),
    ('imtl_g', mtl.imtl(2, mode='gradient'), [0.0767, 1, 1],
     [0.5923, 0.4077]),
    ('upgrad', mtl.upgrad(2), [0.2929, 1.9004, 1.9004], [1.1109, 0.7894]),
    ('dualproj', mtl.dualproj(2), [0.5563, 1.1109, 1.1109], [0.6109, 0.5]),
    ('aligned_mtl', mtl.aligned_mtl(2), [0.2133, 0.9673, 0.9673],
     [0.5591, 0.4083]),
    # The table gives no ConFIG weights; these are 10.408/12.597 · (1/n_t)
    # · 6.2977, hand-derived from G = [[18, -22], [-22, 38]].
    ('config', mtl.config(2), [0.1588, 2.0706, 2.0706], [1.2265, 0.8441]),
])
def test_reference_values(name, tx, update, weights):
  del name
  updates, state = _update(tx, REFERENCE_J)
  np.testing.assert_allclose(updates, update, atol=1e-4)
  np.testing.assert_allclose(state.weights, weights, atol=1e-4)


# ---------------------------------------------------------------------------
# The dual-cone solver.


def _reference_projection(matrix, lower):
  """argmin_{v >= u} vᵀAv in float64 by enumerating every free set."""
  num_tasks = len(lower)
  linear = matrix @ lower
  best_value, best = np.inf, None
  for size in range(num_tasks + 1):
    for free in itertools.combinations(range(num_tasks), size):
      free = list(free)
      offset = np.zeros(num_tasks)
      if free:
        offset[free] = np.linalg.solve(matrix[np.ix_(free, free)],
                                       -linear[free])
      if np.all(offset >= 0):
        weights = lower + offset
        value = weights @ matrix @ weights
        if value < best_value:
          best_value, best = value, weights
  return best


def _solver_problems(num_problems=12, num_tasks=5, seed=0):
  """Gramians with conflicts (full rank, rank 2, one zero task) and bounds."""
  rng = np.random.default_rng(seed)
  grams, lowers = [], []
  for index in range(num_problems):
    dim = [8, 2, 8][index % 3]
    jac = rng.normal(size=(num_tasks, dim)) * rng.lognormal(size=(num_tasks, 1))
    jac[0] = -0.7 * jac[1:].sum(axis=0) + 0.3 * jac[0]
    if index % 3 == 2:
      jac[3] = 0.0
    grams.append(jac @ jac.T)
    lower = rng.uniform(0.0, 1.0, size=num_tasks) * (rng.uniform(
        size=num_tasks) < 0.7)
    lowers.append(lower.astype(np.float32).astype(np.float64))
  return np.stack(grams), np.stack(lowers)


def _assert_kkt(matrix, lower, weights):
  """KKT of min vᵀAv s.t. v >= u, in float64: v >= u, μ = Av >= 0 and
  μ_t (v_t - u_t) = 0, relative to ``max(u) · max(diag A)`` (returned)."""
  scale = np.max(lower) * np.max(np.diag(matrix))
  assert np.all(weights >= lower)
  multipliers = matrix @ weights
  assert np.all(multipliers >= -1e-5 * scale)
  np.testing.assert_allclose(multipliers * (weights - lower), 0.0,
                             atol=1e-5 * scale * np.max(weights))
  return scale


_solve_batch = jax.jit(jax.vmap(
    lambda gram, lower, reg: dual_cone.project(
        dual_cone.normalised_gram(gram, reg), lower,
        dual_cone.default_max_iters(5)), in_axes=(0, 0, None)))


@pytest.mark.parametrize('reg_eps', [1e-4, 0.0])
def test_dual_cone_solver_meets_kkt_and_matches_enumeration(reg_eps):
  grams, lowers = _solver_problems()
  solutions = _solve_batch(jnp.asarray(grams, jnp.float32),
                           jnp.asarray(lowers, jnp.float32), reg_eps)
  assert bool(jnp.all(solutions.converged))
  # About one step per coordinate that ends up free, plus the last check.
  assert int(jnp.max(solutions.iterations)) <= 5 + 2
  for gram, lower, weights in zip(grams, lowers,
                                  np.asarray(solutions.weights, np.float64)):
    matrix = (gram / np.trace(gram)
              + max(reg_eps, dual_cone.MIN_REG_EPS) * np.eye(5))
    scale = _assert_kkt(matrix, lower, weights)
    # Same update as the float64 optimum: compare in the A-norm, the norm of
    # the update. Weights along near-null directions of a rank-deficient A
    # are free up to float32 round-off of the objective (~eps·‖A‖‖v‖²), so
    # the A-norm error is of order sqrt(eps)·sqrt(‖A‖)·‖v‖.
    difference = weights - _reference_projection(matrix, lower)
    assert np.sqrt(difference @ matrix @ difference) <= 1e-3 * scale ** 0.5 * (
        np.max(weights))
    if np.linalg.cond(matrix) < 1e3:  # Well conditioned: the weights too.
      np.testing.assert_allclose(difference, 0.0, atol=1e-4 * np.max(weights))


def test_dual_cone_warm_start_on_many_nearly_orthogonal_gradients():
  # 64 tasks in dimension 4096: the coordinates the bound violates are
  # (nearly) the final free set, so the warm start ends in a few steps; cold,
  # one coordinate is freed per step (about T/2 = 32 here). The KKT
  # conditions are checked in float64, as above.
  rng = np.random.default_rng(5)
  jac = rng.normal(size=(64, 4096)) * np.exp(rng.uniform(-1, 1, (64, 1)))
  gram = jac @ jac.T
  lowers = np.eye(64)[:8] / 64  # UPGrad's bounds for the first 8 tasks.
  solutions = jax.jit(jax.vmap(lambda lower: dual_cone.project(
      dual_cone.normalised_gram(jnp.asarray(gram, jnp.float32), 1e-4), lower,
      dual_cone.default_max_iters(64))))(jnp.asarray(lowers, jnp.float32))
  assert bool(jnp.all(solutions.converged))
  assert int(jnp.max(solutions.iterations)) <= 6
  matrix = gram / np.trace(gram) + 1e-4 * np.eye(64)
  for lower, weights in zip(lowers, np.asarray(solutions.weights, np.float64)):
    _assert_kkt(matrix, lower, weights)
    assert np.sum(weights > lower) > 8  # Many coordinates end up free.


def test_dual_cone_solver_on_zero_gramian_returns_the_bound():
  lower = jnp.asarray([0.25, 0.0, 0.5])
  solution = jax.jit(lambda g: dual_cone.project(
      dual_cone.normalised_gram(g, 1e-4), lower, 10))(jnp.zeros((3, 3)))
  np.testing.assert_array_equal(solution.weights, lower)
  assert bool(solution.converged)


# ---------------------------------------------------------------------------
# UPGrad and DualProj.


def test_upgrad_and_dualproj_match_the_reference_and_do_not_conflict():
  num_tasks = 4
  jac = _random_problem(1)
  for reg_eps in (1e-4, 0.0):
    gram = jac @ jac.T
    matrix = (gram / np.trace(gram)
              + max(reg_eps, dual_cone.MIN_REG_EPS) * np.eye(num_tasks))
    expected_upgrad = sum(_reference_projection(matrix, row / num_tasks)
                          for row in np.eye(num_tasks))
    expected_dualproj = _reference_projection(
        matrix, np.full(num_tasks, 1.0 / num_tasks))
    for tx, expected in ((mtl.upgrad(num_tasks, reg_eps=reg_eps),
                          expected_upgrad),
                         (mtl.dualproj(num_tasks, reg_eps=reg_eps),
                          expected_dualproj)):
      updates, state = _update(tx, jac.astype(np.float32))
      weights = np.asarray(state.weights, np.float64)
      np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-5)
      assert np.all(weights >= 1.0 / num_tasks - 1e-7)
      alignment = jac @ np.asarray(updates, np.float64)
      # The ridge relaxes non-conflict by reg_eps·tr(G)·w_t (module doc).
      slack = reg_eps * np.trace(gram) * weights + 1e-5 * np.linalg.norm(
          jac, axis=1) * np.linalg.norm(updates)
      assert np.all(alignment >= -slack), alignment


def test_upgrad_solver_scales_to_many_tasks():
  # 24 tasks with conflicts: every projection converges under the cap.
  jac = _random_problem(3, num_tasks=24, dim=40)
  gram = jnp.asarray(jac @ jac.T, jnp.float32)
  matrix = dual_cone.normalised_gram(gram, 0.0)
  solutions = jax.jit(lambda m: dual_cone.project_each(
      m, jnp.eye(24) / 24, dual_cone.default_max_iters(24)))(matrix)
  assert bool(jnp.all(solutions.converged))
  weights = np.asarray(solutions.weights.sum(axis=0), np.float64)
  update = weights @ jac
  norms = np.linalg.norm(jac, axis=1) * np.linalg.norm(update)
  assert np.all(jac @ update >= -1e-4 * norms)


def test_invalid_solver_arguments_are_rejected():
  with pytest.raises(ValueError, match='max_iters'):
    mtl.upgrad(3, max_iters=0)
  with pytest.raises(ValueError, match='reg_eps'):
    mtl.dualproj(3, reg_eps=-1.0)
  with pytest.raises(ValueError, match='mode'):
    mtl.imtl(3, mode='both')


# ---------------------------------------------------------------------------
# PCGrad.


def _reference_pcgrad(jac, orders):
  """Algorithm 1 of Yu et al. on the gradients themselves, in float64."""
  total = np.zeros(jac.shape[1])
  for task, order in enumerate(orders):
    projected = jac[task].copy()
    for other in order:
      inner = projected @ jac[other]
      if other != task and inner < 0:
        projected -= inner / (jac[other] @ jac[other]) * jac[other]
    total += projected
  return total


def test_pcgrad_matches_algorithm_one_and_splits_its_key():
  jac = _random_problem(4, num_tasks=5)
  jac[2] = 0.0  # A zero gradient is never projected on.
  tx = mtl.pcgrad(5, key=7)
  state = tx.init(jnp.zeros(8))
  updates, new_state = _update(tx, jac.astype(np.float32), state)
  # The orders the method draws: one permutation per task from the step key.
  next_key, step_key = jax.random.split(state.weighting_state.key)
  orders = [np.asarray(jax.random.permutation(k, 5))
            for k in jax.random.split(step_key, 5)]
  np.testing.assert_allclose(updates, _reference_pcgrad(jac, orders),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(new_state.weighting_state.key, next_key)
  # The next step draws other orders from the next key.
  updates2, _ = _update(tx, jac.astype(np.float32), new_state)
  step_key2 = jax.random.split(next_key)[1]
  orders2 = [np.asarray(jax.random.permutation(k, 5))
             for k in jax.random.split(step_key2, 5)]
  np.testing.assert_allclose(updates2, _reference_pcgrad(jac, orders2),
                             rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# IMTL.


def test_imtl_g_projects_equally_on_every_unit_gradient():
  jac = _random_problem(5)
  updates, state = _update(mtl.imtl(4, mode='gradient'), jac.astype(np.float32))
  units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
  projections = units @ np.asarray(updates, np.float64)
  np.testing.assert_allclose(projections, projections[0], rtol=1e-4)
  np.testing.assert_allclose(np.sum(state.weights), 1.0, rtol=1e-5)
  # The paper's closed form, α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹, α_1 = 1 - Σ α_{2:T}.
  differences = jac[0] - jac[1:]
  unit_differences = units[0] - units[1:]
  rest = jac[0] @ unit_differences.T @ np.linalg.inv(
      differences @ unit_differences.T)
  np.testing.assert_allclose(state.weights, np.r_[1 - rest.sum(), rest],
                             rtol=1e-4, atol=1e-5)


def test_imtl_l_and_hybrid_scale_the_losses_and_learn_the_scales():
  jac = _random_problem(6).astype(np.float32)
  losses = jnp.asarray([0.5, 2.0, 1.0, 4.0])
  learning_rate = 0.1
  scales = {}
  for mode in ('loss', 'hybrid'):
    tx = mtl.imtl(4, mode=mode, optimizer=optax.sgd(learning_rate))
    state = tx.init(jnp.zeros(8))
    _, state = _update(tx, jac, state, losses)  # s = 0: w = e^0 = 1 or α.
    # SGD on ∂(e^s L − s)/∂s = e^s L − 1 at s = 0.
    np.testing.assert_allclose(state.weighting_state.log_scales,
                               -learning_rate * (np.asarray(losses) - 1.0),
                               rtol=1e-6)
    updates, state2 = _update(tx, jac, state, losses)
    scales[mode] = np.exp(np.asarray(state.weighting_state.log_scales,
                                     np.float64))
    if mode == 'loss':
      np.testing.assert_allclose(state2.weights, scales[mode], rtol=1e-6)
    else:
      # IMTL-G on the scaled gradients e^{s_t} g_t, mapped to raw weights.
      expected, _ = _update(mtl.imtl(4, mode='gradient'),
                         jac * scales[mode][:, None].astype(np.float32))
      np.testing.assert_allclose(updates, expected, rtol=1e-4, atol=1e-5)


def test_imtl_hybrid_weights_stay_finite_at_extreme_scales():
  tx = mtl.imtl(2, mode='hybrid')
  state = tx.init(jnp.zeros(3))
  state = state._replace(weighting_state=state.weighting_state._replace(
      log_scales=jnp.asarray([80.0, -80.0])))
  updates, _ = _update(tx, REFERENCE_J, state, jnp.ones(2))
  assert np.all(np.isfinite(updates))


# ---------------------------------------------------------------------------
# Aligned-MTL.


@pytest.mark.parametrize('dim', [8, 2])
def test_aligned_mtl_balance_makes_the_gradients_orthogonal(dim):
  jac = _random_problem(7, dim=dim)
  gram = jac @ jac.T
  # The columns of B, one preference e_i at a time.
  balance = np.asarray(jax.jit(jax.vmap(
      spectral.aligned_weights, in_axes=(None, 0)))(
          jnp.asarray(gram, jnp.float32), jnp.eye(4)), np.float64).T
  eigenvalues, eigenvectors = np.linalg.eigh(gram)
  kept = eigenvalues > 1e-5 * eigenvalues[-1]
  smallest = eigenvalues[kept].min()
  # The aligned system B J has orthogonal rows of norm σ_min on the range
  # of G: B G B = λ_min P_range (Algorithm 1).
  projector = eigenvectors[:, kept] @ eigenvectors[:, kept].T
  np.testing.assert_allclose(balance @ gram @ balance, smallest * projector,
                             atol=1e-4 * smallest)
  expected = np.sqrt(smallest) * (eigenvectors[:, kept] / np.sqrt(
      eigenvalues[kept])) @ eigenvectors[:, kept].T
  np.testing.assert_allclose(balance, expected, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------
# ConFIG.


@pytest.mark.parametrize('seed', [8, 9])
def test_config_matches_its_definition_and_has_equal_positive_cosines(seed):
  jac = _random_problem(seed)
  updates, _ = _update(mtl.config(4), jac.astype(np.float32))
  units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
  best = np.linalg.pinv(units) @ np.ones(4)  # g_u = U⁺ 1
  best_unit = best / np.linalg.norm(best)
  expected = (jac @ best_unit).sum() * best_unit
  np.testing.assert_allclose(updates, expected, rtol=1e-4, atol=1e-5)
  cosines = units @ np.asarray(updates, np.float64) / np.linalg.norm(updates)
  # 2e-4: float32 eigh and pseudo-inverse rounding (measured 1.01e-4 with
  # another CPU code generation).
  np.testing.assert_allclose(cosines, cosines[0], rtol=2e-4)
  assert cosines[0] > 0


def test_config_on_two_dependent_rows_issue_24():
  # Float64 by hand. Parallel rows g_2 = 3 g_1: U = [u; u] (u = g_1/‖g_1‖),
  # U⁺1 = u, so d = (‖g_1‖ + 3‖g_1‖) u = 4 g_1. Opposite rows g_2 = −k g_1:
  # U = [u; −u], U⁺ = [u, −u]/2, U⁺1 = 0: the direction ĝ_u is undefined and
  # d = 0 (TorchJD's normalize(0) gives 0 too). Before, float32 rounding
  # of the eigenvectors chose a direction: k = 3 gave d = −2 g_1, k = 0.5 gave
  # 0; TorchJD on float64 rows rounded from float32 keeps a singular value
  # of ~1e-16 relative and also returns a rounding direction (issue 24's
  # factor 5.5e3). Both k must give exactly 0.
  g1 = np.array([0.3, -1.2, 2.0, 0.7], np.float32)

  def update(jacobian):
    tx = mtl.config(2)
    return np.asarray(tx.update(jnp.asarray(jacobian, jnp.float32),
                                tx.init(jnp.zeros(4)))[0], np.float64)

  np.testing.assert_allclose(update(np.stack([g1, 3 * g1])), 4 * g1,
                             rtol=1e-5)
  for k in (3.0, 0.5, 1.0):
    np.testing.assert_array_equal(update(np.stack([g1, -k * g1])), 0.0)
  # Independent rows are untouched by the rule: J = diag(1, 3) gives
  # g_u = (1, 1) and d = (1 + 3)/√2 · (1, 1)/√2 = (2, 2).
  np.testing.assert_allclose(update(np.array([[1.0, 0, 0, 0], [0, 3.0, 0, 0]])),
                             [2.0, 2.0, 0.0, 0.0], rtol=1e-6)
