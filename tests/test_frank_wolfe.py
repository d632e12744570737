"""The MGDA paper's Frank-Wolfe min-norm solver (issue 24, part 2).

Sener and Koltun (NeurIPS 2018), Algorithm 2: uniform start, vertex
``t = argmin_t (Gα)_t``, exact line search, stop on a small change or at the
cap. Offered as ``solver='frank_wolfe'``; Wolfe's exact method stays the
default.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from mtl_optax._src.solvers import frank_wolfe
from mtl_optax._src.solvers import min_norm

# Hand-worked case: G = [[4, 2, 0], [2, 3, 1], [0, 1, 2]] (positive definite).
GRAM3 = np.array([[4.0, 2.0, 0.0], [2.0, 3.0, 1.0], [0.0, 1.0, 2.0]])


def test_first_two_steps_match_the_hand_derivation():
  # Step 1, from α0 = (1/3, 1/3, 1/3):
  #   Gα0 = (6/3, 6/3, 3/3) = (2, 2, 1), so t = 3 (the least);
  #   α0ᵀGα0 = (2 + 2 + 1)/3 = 5/3, (Gα0)_3 = 1, G_33 = 2;
  #   γ = (5/3 − 1) / (5/3 − 2·1 + 2) = (2/3) / (5/3) = 2/5;
  #   α1 = (3/5)·α0 + (2/5)·e_3 = (1/5, 1/5, 3/5).
  # Step 2:
  #   Gα1 = (4/5 + 2/5, 2/5 + 3/5 + 3/5, 1/5 + 6/5) = (6/5, 8/5, 7/5): t = 1;
  #   α1ᵀGα1 = (6/5 + 8/5 + 21/5)/5 = 7/5, (Gα1)_1 = 6/5, G_11 = 4;
  #   γ = (7/5 − 6/5) / (7/5 − 12/5 + 4) = (1/5) / 3 = 1/15;
  #   α2 = (14/15)·α1 + (1/15)·e_1 = (19/75, 14/75, 42/75).
  gram = jnp.asarray(GRAM3, jnp.float32)
  first = frank_wolfe.solve(gram, max_iters=1)
  np.testing.assert_allclose(first.weights, [0.2, 0.2, 0.6], rtol=1e-6)
  assert int(first.iterations) == 1 and not bool(first.converged)
  second = frank_wolfe.solve(gram, max_iters=2)
  np.testing.assert_allclose(second.weights,
                             np.array([19.0, 14.0, 42.0]) / 75, rtol=1e-6)
  # The line search alone: Algorithm 1 on ‖a‖² = 5/3, a·b = 1, ‖b‖² = 2.
  np.testing.assert_allclose(
      frank_wolfe.line_search(jnp.float32(5 / 3), jnp.float32(1.0),
                              jnp.float32(2.0)), 0.4, rtol=1e-6)


def test_line_search_ends():
  # b no better than a (a·b >= ‖a‖²): γ = 0; a·b >= ‖b‖²: γ = 1 (the
  # paper's Algorithm 1, cases 1 and 2); a = b: γ = 0.
  assert float(frank_wolfe.line_search(1.0, 1.5, 4.0)) == 0.0
  assert float(frank_wolfe.line_search(4.0, 1.0, 1.0)) == 1.0
  assert float(frank_wolfe.line_search(2.0, 2.0, 2.0)) == 0.0


def test_two_tasks_are_solved_in_one_step():
  # On a segment the exact line search from the midpoint lands on the
  # minimiser: J = [[-4, 1, 1], [6, 1, 1]] gives α = (0.6, 0.4) (the MGDA
  # docstring's closed form), then a zero step stops the loop.
  jacobian = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
  result = frank_wolfe.solve(jacobian @ jacobian.T)
  np.testing.assert_allclose(result.weights, [0.6, 0.4], rtol=1e-6)
  assert int(result.iterations) == 2 and bool(result.converged)


def test_stopping_rule_cap_and_degenerate_inputs():
  gram = jnp.asarray(GRAM3, jnp.float32)
  capped = frank_wolfe.solve(gram, max_iters=5)
  assert int(capped.iterations) == 5 and not bool(capped.converged)
  # A loose tolerance stops at the first step whose ℓ1 change is below it:
  # step 1 changes α by (2/5)·‖e_3 − α0‖₁ = (2/5)(4/3) = 8/15 ≈ 0.53,
  # step 2 by (1/15)·‖e_1 − α1‖₁ = (1/15)(8/5) = 8/75 ≈ 0.11.
  loose = frank_wolfe.solve(gram, tol=0.2)
  assert int(loose.iterations) == 2 and bool(loose.converged)
  # G = 0: no step moves; uniform weights, converged.
  zero = frank_wolfe.solve(jnp.zeros([3, 3]))
  np.testing.assert_allclose(zero.weights, np.full(3, 1 / 3), rtol=1e-6)
  assert bool(zero.converged)
  # Non-finite G: returns at once, not converged.
  bad = frank_wolfe.solve(gram.at[0, 1].set(jnp.nan))
  assert int(bad.iterations) == 0 and not bool(bad.converged)
  # A face: task 2 inactive keeps weight 0; on {1, 3} the minimiser of
  # 4a² + 2(1 − a)² is a = 1/3, reached in one step from (1/2, 0, 1/2).
  face = frank_wolfe.solve(gram, active=jnp.array([True, False, True]))
  np.testing.assert_allclose(face.weights, [1 / 3, 0.0, 2 / 3], rtol=1e-6)


def _common_component_jacobian(num_tasks, seed):
  rng = np.random.default_rng(seed)
  dim = 2 * num_tasks + 2
  return (rng.normal(size=(num_tasks, dim))
          + rng.normal(size=dim)).astype(np.float32)


@pytest.mark.parametrize('num_tasks', [3, pytest.param(5, marks=pytest.mark.slow)])
def test_mgda_frank_wolfe_runs_compiled_near_the_exact_point(num_tasks):
  # The tolerance stated in the mgda docstring and docs/solvers.md: on
  # gradients with a common component, after its 250 steps ‖d‖² is within
  # 1 % of the minimum and d within 10 % of the exact update (measured
  # worst over 20 seeds: 0.74 % and 5.6 %).
  for seed in range(4):
    jacobian = jnp.asarray(_common_component_jacobian(num_tasks, seed))
    exact_tx = mtl.mgda(num_tasks)
    fw_tx = mtl.mgda(num_tasks, solver='frank_wolfe')
    state = fw_tx.init(jacobian[0])
    update, fw_state = jax.jit(fw_tx.update)(jacobian, state)
    expected, _ = jax.jit(exact_tx.update)(jacobian, exact_tx.init(
        jacobian[0]))
    update = np.asarray(update, np.float64)
    expected = np.asarray(expected, np.float64)
    assert np.sum(update ** 2) <= 1.01 * np.sum(expected ** 2)
    assert np.linalg.norm(update - expected) <= 0.1 * np.linalg.norm(
        expected)
    np.testing.assert_allclose(np.sum(fw_state.weights), 1.0, atol=1e-6)
    assert np.all(np.asarray(fw_state.weights) >= 0)


@pytest.mark.slow
def test_frank_wolfe_batches_and_every_min_norm_method_takes_it():
  jacobians = np.stack([_common_component_jacobian(4, seed)
                        for seed in range(3)])
  grams = jnp.einsum('ntp,nsp->nts', jacobians, jacobians)
  batched = jax.jit(jax.vmap(lambda g: min_norm.min_norm_weights(
      g, solver='frank_wolfe')))(grams)
  for gram, weights in zip(grams, batched):
    np.testing.assert_allclose(
        weights, frank_wolfe.solve(gram).weights, rtol=1e-5, atol=1e-7)
  jacobian = jnp.asarray(jacobians[0])
  for factory, kwargs in ((mtl.central_direction, {}),
                          (mtl.task_tensioner, {'base': 'mgda'}),
                          (mtl.task_tensioner, {})):
    exact = factory(4, **kwargs)
    approximate = factory(4, solver='frank_wolfe', **kwargs)
    losses = jnp.ones([4])
    expected, _ = exact.update(jacobian, exact.init(jacobian[0]),
                               task_losses=losses)
    update, _ = approximate.update(jacobian, approximate.init(jacobian[0]),
                                   task_losses=losses)
    assert np.linalg.norm(update - expected) <= 0.1 * np.linalg.norm(
        expected)


def test_solver_is_checked():
  for factory in (mtl.mgda, mtl.central_direction, mtl.task_tensioner):
    with pytest.raises(ValueError, match='solver must be one of'):
      factory(3, solver='frank-wolfe')
  with pytest.raises(ValueError, match='solver must be one of'):
    min_norm.min_norm_weights(jnp.eye(3), solver='pgd')
