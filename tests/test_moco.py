"""MoCo: tracked loss-scaled unit gradients and projected weight steps."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl

GRADS = jnp.array([[3.0, 0.0], [0.0, 2.0]])


def _run(tx, steps):
  step = jax.jit(lambda g, s, l: tx.update(g, s, task_losses=l))
  state, outputs = tx.init(jnp.zeros(GRADS.shape[1:])), []
  for grads, losses in steps:
    updates, state = step(jnp.asarray(grads, jnp.float32), state,
                          jnp.asarray(losses, jnp.float32))
    outputs.append(np.asarray(updates))
  return outputs, state


def test_two_steps_by_hand():
  # Defaults β = 0.5, σ_β = 0.5, γ = 0.1, σ_γ = 0.5, ρ = 0; orthogonal
  # gradients g₁ = [3, 0], g₂ = [0, 2], so h_t = L_t e_t and Y Yᵀ is diagonal.
  # Step 1 (k = 1, β₁ = 0.5, γ₁ = 0.1), L = [1, 2]: h = [[1, 0], [0, 2]],
  #   y = 0 − 0.5 (0 − h) = [[0.5, 0], [0, 1]], Y Yᵀ = diag(0.25, 1);
  #   λ − γ₁ Y Yᵀ λ = [0.5 − 0.0125, 0.5 − 0.05] = [0.4875, 0.45], whose
  #   simplex projection adds (1 − 0.9375)/2 = 0.03125 to each:
  #   λ = [0.51875, 0.48125]; d = Yᵀλ = [0.259375, 0.48125].
  # Step 2 (k = 2, β₂ = 0.5/√2, γ₂ = 0.1/√2), L = [2, 1]: h = [[2, 0], [0, 1]],
  #   y₁ = 0.5 + β₂ (2 − 0.5) on the first axis, y₂ = [0, 1] (already h₂);
  #   Y Yᵀ = diag(y₁², 1); λ' = λ − γ₂ diag(y₁², 1) λ, projected by adding
  #   (1 − Σλ')/2 to each; d = [y₁ λ₁, λ₂].
  updates, state = _run(mtl.moco(2), [(GRADS, [1.0, 2.0]),
                                      (GRADS, [2.0, 1.0])])
  np.testing.assert_allclose(updates[0], [0.259375, 0.48125], rtol=1e-6)
  beta2, gamma2 = 0.5 / math.sqrt(2), 0.1 / math.sqrt(2)
  y1 = 0.5 + beta2 * 1.5
  stepped = [0.51875 - gamma2 * y1 ** 2 * 0.51875, 0.48125 - gamma2 * 0.48125]
  shift = (1 - sum(stepped)) / 2
  weights = [stepped[0] + shift, stepped[1] + shift]
  np.testing.assert_allclose(state.tracked_weights, weights, rtol=1e-6)
  np.testing.assert_allclose(updates[1], [y1 * weights[0], weights[1]],
                             rtol=1e-6)
  # Numerically: λ ≈ [0.516295, 0.483705], d ≈ [0.531954, 0.483705].
  np.testing.assert_allclose(updates[1], [0.531954, 0.483705], atol=1e-6)
  np.testing.assert_allclose(state.tracked[0], [[y1, 0.0], [0.0, 1.0]],
                             rtol=1e-6)


def test_softmax_weight_update_by_hand():
  # Step 1 as above, but λ = softmax([0.4875, 0.45]) (the authors' code).
  updates, state = _run(mtl.moco(2, weight_update='softmax'),
                        [(GRADS, [1.0, 2.0])])
  first = 1 / (1 + math.exp(0.45 - 0.4875))
  np.testing.assert_allclose(state.tracked_weights, [first, 1 - first], rtol=1e-6)
  np.testing.assert_allclose(updates[0], [0.5 * first, 1 - first], rtol=1e-6)


def test_ridge_enters_the_weight_step():
  # ρ = 1: λ − γ₁ (Y Yᵀ + I) λ = [0.5 − 0.0625, 0.5 − 0.1] = [0.4375, 0.4];
  # the projection adds 0.08125 to each: [0.51875, 0.48125] (the ridge
  # shifts both weights equally when they are equal).
  _, state = _run(mtl.moco(2, rho=1.0), [(GRADS, [1.0, 2.0])])
  np.testing.assert_allclose(state.tracked_weights, [0.51875, 0.48125], rtol=1e-6)


@pytest.mark.parametrize('factor', [1e-20, 1e-3, 1e20])
def test_update_ignores_the_gradient_scale(factor):
  # h_t = L_t g_t/‖g_t‖: the same update for any common gradient scale.
  rng = np.random.default_rng(0)
  steps = [(rng.normal(size=(3, 4)), rng.uniform(0.5, 2.0, 3))
           for _ in range(2)]
  tx = mtl.moco(3)
  step = jax.jit(lambda g, s, l: tx.update(g, s, task_losses=l))
  reference = scaled = tx.init(jnp.zeros(4))
  for grads, losses in steps:
    losses = jnp.asarray(losses, jnp.float32)
    out, reference = step(jnp.asarray(grads, jnp.float32), reference, losses)
    out_scaled, scaled = step(jnp.asarray(grads * factor, jnp.float32),
                              scaled, losses)
  np.testing.assert_allclose(out_scaled, out, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(scaled.tracked_weights, reference.tracked_weights, rtol=1e-5)


def test_zero_gradient_task_is_tracked_as_zero():
  _, state = _run(mtl.moco(2), [(jnp.array([[3.0, 0.0], [0.0, 0.0]]),
                                 [1.0, 2.0])])
  np.testing.assert_allclose(state.tracked[0], [[0.5, 0.0], [0.0, 0.0]])
  # λ − 0.1 diag(0.25, 0) λ = [0.4875, 0.5], projected: [0.49375, 0.50625].
  np.testing.assert_allclose(state.tracked_weights, [0.49375, 0.50625], rtol=1e-6)


def test_state_is_task_by_parameter_and_task_specific_leaves_pass():
  params = {'trunk': jnp.zeros((4, 3)), 'head': jnp.zeros(2)}
  tx = mtl.moco(2, task_specific={'trunk': False, 'head': True})
  state = tx.init(params)
  assert [leaf.shape for leaf in state.tracked] == [(2, 4, 3)]
  grads = {'trunk': jnp.ones((2, 4, 3)), 'head': jnp.array([[1.0, 2.0],
                                                            [3.0, 4.0]])}
  updates, _ = tx.update(grads, state, task_losses=jnp.ones(2))
  np.testing.assert_allclose(updates['head'], [4.0, 6.0])


def test_needs_the_losses():
  tx = mtl.moco(2)
  with pytest.raises(ValueError, match='task_losses'):
    tx.update(GRADS, tx.init(jnp.zeros(2)))


@pytest.mark.parametrize('kwargs, match', [
    ({'tracking_rate': 0.0}, 'tracking_rate'),
    ({'tracking_rate': 1.5}, 'tracking_rate'),
    ({'tracking_rate_sigma': -0.1}, 'tracking_rate_sigma'),
    ({'learning_rate': -0.1}, 'learning_rate'),
    ({'learning_rate_sigma': -1.0}, 'learning_rate_sigma'),
    ({'rho': -1.0}, 'rho'),
    ({'weight_update': 'frank_wolfe'}, 'weight_update'),
])
def test_bad_hyperparameters_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mtl.moco(2, **kwargs)
