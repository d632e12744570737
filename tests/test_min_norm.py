"""min_norm_weights: the min-norm point of the convex hull, from the Gramian.

Expected values come from the paper's worked example (METHODS.md), from hand
derivations (T = 1, 2, G = 0) and from float64 NumPy references that share no
code with the solver (tests/min_norm_reference.py: exhaustive KKT enumeration
for small T, accelerated projected gradient plus an active-set polish for large
T, both with a certified lower bound on the optimum).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import min_norm_reference as reference
import mtl_optax as mtl
from mtl_optax._src.solvers import min_norm

TARGET = 1e-6  # Relative suboptimality (f(α) − min) / max_t G_tt (the issue).


@functools.lru_cache(maxsize=None)
def _solver(closed_form=True, max_iters=min_norm.DEFAULT_MAX_ITERS):
  return jax.jit(functools.partial(min_norm.solve, closed_form=closed_form,
                                   max_iters=max_iters))


def _gram(kind, num_tasks, seed):
  rng = np.random.default_rng(seed)
  dim = 3 * num_tasks
  if kind == 'random':  # Correlated gradients of similar norms.
    jacobian = rng.normal(size=(num_tasks, dim)) + 0.5 * rng.normal(size=dim)
  elif kind == 'ill_conditioned':  # Singular values from 1 to 1e-4: cond 1e8.
    left, _ = np.linalg.qr(rng.normal(size=(num_tasks, num_tasks)))
    right, _ = np.linalg.qr(rng.normal(size=(dim, num_tasks)))
    jacobian = left @ np.diag(np.logspace(0, -4, num_tasks)) @ right.T
  elif kind == 'rank_deficient':  # Rank T/3 and norms spread over e^±2.
    rank = max(1, num_tasks // 3)
    jacobian = (rng.normal(size=(num_tasks, rank)) @ rng.normal(size=(rank, dim))
                * np.exp(rng.normal(size=(num_tasks, 1))))
  else:  # 'conflicting': T > dimension, so 0 is (nearly) in the hull.
    jacobian = (rng.normal(size=(num_tasks, num_tasks // 2 + 1))
                * np.exp(rng.normal(size=(num_tasks, 1))))
  return jacobian @ jacobian.T


KINDS = ('random', 'ill_conditioned', 'rank_deficient', 'conflicting')


# ---------------------------------------------------------------------------
# Worked example and closed forms.


def test_worked_example_closed_form_and_iterative_agree():
  # METHODS.md: J = [[-4, 1, 1], [6, 1, 1]], G = [[18, -22], [-22, 38]],
  # α* = [0.6, 0.4], update [0, 1, 1]. By hand: α_1 = (38 + 22) / 100.
  jacobian = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
  gram = jacobian @ jacobian.T
  np.testing.assert_array_equal(gram, [[18.0, -22.0], [-22.0, 38.0]])
  closed = _solver()(gram)
  iterative = _solver(closed_form=False)(gram)
  np.testing.assert_allclose(closed.weights, [0.6, 0.4], rtol=1e-7)
  np.testing.assert_allclose(iterative.weights, [0.6, 0.4], rtol=1e-6)
  # Both weights are positive: the solver's one affine solve is the answer.
  assert int(closed.iterations) == 0 and bool(iterative.converged)
  np.testing.assert_allclose(closed.weights @ jacobian, [0.0, 1.0, 1.0],
                             atol=1e-6)
  np.testing.assert_allclose(jax.jit(mtl.min_norm_weights)(gram), [0.6, 0.4])


@pytest.mark.parametrize('seed', range(6))
def test_two_tasks_closed_form_matches_iterative_and_enumeration(seed):
  gram = _gram(('random', 'rank_deficient', 'conflicting')[seed % 3], 2, seed)
  expected, _ = reference.exhaustive(gram)
  closed = _solver()(jnp.asarray(gram, jnp.float32)).weights
  iterative = _solver(closed_form=False)(jnp.asarray(gram, jnp.float32)).weights
  np.testing.assert_allclose(closed, expected, atol=1e-6)
  np.testing.assert_allclose(iterative, closed, atol=1e-5)


def test_two_tasks_special_cases():
  # One gradient is a multiple of the other, pointing the same way: the
  # shorter one is the min-norm point. Equal gradients: ½ each (documented).
  # Opposite gradients g, −2g: 0 = ⅔ g + ⅓ (−2g).
  cases = {
      'shorter': ([[1.0, 2.0], [2.0, 4.0]], [1.0, 0.0]),
      'equal': ([[1.0, 1.0], [1.0, 1.0]], [0.5, 0.5]),
      'opposite': ([[1.0, -2.0], [-2.0, 4.0]], [2 / 3, 1 / 3]),
      'zero': ([[0.0, 0.0], [0.0, 0.0]], [0.5, 0.5]),
  }
  for name, (gram, expected) in cases.items():
    for closed_form in (True, False):
      weights = _solver(closed_form)(jnp.asarray(gram)).weights
      if name == 'equal' and not closed_form:
        # Any split is optimal; Wolfe's method stops on its first vertex.
        expected = [1.0, 0.0]
      np.testing.assert_allclose(weights, expected, atol=1e-6, err_msg=name)


def test_one_task_and_zero_gramian():
  np.testing.assert_array_equal(_solver()(jnp.ones((1, 1))).weights, [1.0])
  # G = 0: every point is optimal; the solver stops at once on uniform weights.
  result = _solver()(jnp.zeros((4, 4)))
  np.testing.assert_array_equal(result.weights, np.full(4, 0.25))
  assert int(result.iterations) == 0


# ---------------------------------------------------------------------------
# Accuracy against the float64 references.


@pytest.mark.parametrize('kind', KINDS)
def test_matches_exhaustive_enumeration_for_small_task_counts(kind):
  for num_tasks, seed in ((3, 0), (5, 1), (8, 2)):
    gram = _gram(kind, num_tasks, seed)
    expected, bound = reference.exhaustive(gram)
    result = _solver()(jnp.asarray(gram, jnp.float32))
    suboptimality = reference.relative_suboptimality(gram, result.weights, bound)
    assert suboptimality <= TARGET, (num_tasks, suboptimality)
    assert abs(float(np.sum(result.weights)) - 1.0) <= 1e-6
    assert bool(result.converged)  # Stopped on the gap.
    if kind == 'random':  # Positive definite: the minimiser is unique.
      np.testing.assert_allclose(result.weights, expected, atol=1e-4)


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize(
    'num_tasks', [40, pytest.param(100, marks=pytest.mark.slow)])
def test_reaches_the_target_for_large_task_counts(kind, num_tasks):
  gram = _gram(kind, num_tasks, seed=num_tasks)
  expected, bound = reference.converged(gram, iterations=5000)
  # The reference's own certificate is far below the target.
  assert reference.value(gram, expected) - bound <= 1e-8 * gram.diagonal().max()
  result = _solver()(jnp.asarray(gram, jnp.float32))
  suboptimality = reference.relative_suboptimality(gram, result.weights, bound)
  assert suboptimality <= TARGET, suboptimality
  assert int(result.iterations) < min_norm.DEFAULT_MAX_ITERS


def test_an_interior_minimiser_takes_one_solve_and_others_the_loop():
  # 64 nearly orthogonal gradients (dimension 4096) of norms e^±0.5: every
  # weight of the min-norm point is positive, so the affine minimiser over
  # all tasks is the answer and Wolfe's loop does not run (it would add the
  # tasks one by one: 64 iterations).
  rng = np.random.default_rng(11)
  jacobian = (rng.normal(size=(64, 4096))
              * np.exp(rng.uniform(-0.5, 0.5, size=(64, 1))))
  gram = jacobian @ jacobian.T
  expected, bound = reference.converged(gram, iterations=5000)
  result = _solver()(jnp.asarray(gram, jnp.float32))
  assert int(result.iterations) == 0 and bool(result.converged)
  assert reference.relative_suboptimality(gram, result.weights,
                                          bound) <= TARGET
  np.testing.assert_allclose(result.weights, expected, rtol=1e-4)
  assert np.min(expected) > 1e-3  # Interior indeed.
  # Norms e^±1: the min-norm point leaves some long gradients out (the
  # affine minimiser has a negative weight), so the loop runs.
  jacobian *= np.exp(rng.uniform(-1, 1, size=(64, 1)))
  assert int(_solver()(jnp.asarray(jacobian @ jacobian.T,
                                   jnp.float32)).iterations) >= 1
  # Correlated or rank-deficient gradients: a zero weight, or no unique
  # affine minimiser; the check refuses the shortcut and the loop runs.
  for kind in ('random', 'rank_deficient', 'conflicting'):
    result = _solver()(jnp.asarray(_gram(kind, 10, seed=3), jnp.float32))
    assert int(result.iterations) >= 1, kind


@pytest.mark.parametrize('kind', KINDS)
def test_kkt_conditions(kind):
  # KKT of min_{α∈Δ} αᵀGα: α >= 0, Σα = 1, (Gα)_t >= αᵀGα for every t, with
  # equality on the support. Checked in float64 on the float32 answer.
  gram = _gram(kind, 10, seed=7)
  weights = np.asarray(_solver()(jnp.asarray(gram, jnp.float32)).weights,
                       np.float64)
  assert np.all(weights >= 0)
  np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-6)
  dots, value = gram @ weights, weights @ gram @ weights
  scale = gram.diagonal().max()
  assert np.all(dots >= value - 1e-6 * scale)
  support = weights > 1e-3
  np.testing.assert_allclose(dots[support], value, atol=1e-5 * scale)


# ---------------------------------------------------------------------------
# Invariances, batching and robustness.


def test_scale_invariance_and_permutation_equivariance():
  gram = _gram('random', 6, seed=3)
  weights = _solver()(jnp.asarray(gram, jnp.float32)).weights
  # Powers of two: the internal normalisation makes these exact.
  for factor in (2.0**-100, 2.0**100):
    scaled = _solver()(jnp.asarray(gram * factor, jnp.float32)).weights
    np.testing.assert_array_equal(scaled, weights)
  for factor in (1e-30, 1e30):
    scaled = _solver()(jnp.asarray(gram * factor, jnp.float32)).weights
    np.testing.assert_allclose(scaled, weights, atol=1e-5)
  permutation = np.array([3, 0, 5, 1, 4, 2])
  permuted = _solver()(jnp.asarray(gram[np.ix_(permutation, permutation)],
                                   jnp.float32)).weights
  np.testing.assert_allclose(permuted, np.asarray(weights)[permutation],
                             atol=1e-5)


def test_vmap_matches_one_at_a_time():
  grams = np.stack([_gram(kind, 10, seed) for seed, kind in enumerate(KINDS)])
  grams = jnp.asarray(grams, jnp.float32)
  batched = jax.jit(jax.vmap(min_norm.solve))(grams)
  for index in range(len(KINDS)):
    single = _solver()(grams[index])
    # Batched and single programs may round differently once the solver is
    # at its float32 floor (compensated sums, fused differently); on the
    # ill-conditioned Gramian the weights are then determined only to ~1e-3,
    # the objective αᵀGα (hence d) to float precision.
    gram = np.asarray(grams[index], np.float64)
    values = [float(np.asarray(w, np.float64) @ gram @ np.asarray(w, np.float64))
              for w in (batched.weights[index], single.weights)]
    np.testing.assert_allclose(values[0], values[1], rtol=1e-5)
    np.testing.assert_allclose(batched.weights[index], single.weights,
                               atol=1e-4)


def test_non_finite_input_stops_and_iteration_cap_is_respected():
  for bad in (np.nan, np.inf):
    gram = _gram('random', 5, seed=0)
    gram[1, 2] = gram[2, 1] = bad
    result = _solver()(jnp.asarray(gram, jnp.float32))  # Must return.
    assert int(result.iterations) == 0
  capped = _solver(max_iters=3)(jnp.asarray(_gram('conflicting', 40, 0),
                                            jnp.float32))
  assert int(capped.iterations) == 3
  np.testing.assert_allclose(np.sum(capped.weights), 1.0, atol=1e-6)


def test_weights_are_constants_for_autodiff():
  # The authors back-propagate Σ α_t L_t with α fixed; here α has no
  # derivative, and differentiating through the loop does not fail.
  gram = jnp.asarray(_gram('random', 4, seed=0), jnp.float32)
  derivative = jax.jit(jax.grad(lambda g: mtl.min_norm_weights(g) @ jnp.ones(4)
                                + jnp.sum(g)))(gram)
  np.testing.assert_array_equal(derivative, np.ones((4, 4)))


def test_invalid_arguments_are_rejected():
  with pytest.raises(ValueError, match='square'):
    mtl.min_norm_weights(jnp.ones((2, 3)))
  with pytest.raises(ValueError, match='max_iters'):
    mtl.min_norm_weights(jnp.eye(3), max_iters=0)
  with pytest.raises(ValueError, match='tol'):
    mtl.min_norm_weights(jnp.eye(3), tol=-1.0)
