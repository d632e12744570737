"""smoothed: CR-MOGM (Zhou et al., NeurIPS 2022), w_k = α w_{k−1} + (1 − α) ŵ_k.

Expected values: UPGrad's update on J = [[-4, 1, 1], [6, 1, 1]] is TorchJD's
reference value (the one tests/test_projection_methods.py checks for
``mtl.upgrad``); the other numbers are derived by hand in the comments.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_optax as mtl


def _steps(tx, jacobians, losses=None):
  update = jax.jit(lambda g, s, l: tx.update(g, s, task_losses=l))
  state = tx.init(jnp.zeros(jacobians[0].shape[1:]))
  updates, states = [], []
  for step, jacobian in enumerate(jacobians):
    step_losses = None if losses is None else jnp.asarray(losses[step],
                                                          jnp.float32)
    step_update, state = update(jnp.asarray(jacobian, jnp.float32), state,
                                step_losses)
    updates.append(np.asarray(step_update))
    states.append(state)
  return updates, states


def test_constant_jacobian_gives_upgrads_update_at_every_step():
  # ŵ_k is the same every step, so w_k = α ŵ + (1 − α) ŵ = ŵ.
  jacobian = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
  tx = mtl.balancer(2, mtl.weightings.smoothed(mtl.weightings.upgrad()))
  updates, _ = _steps(tx, [jacobian] * 5)
  for update in updates:
    np.testing.assert_allclose(update, [0.2929, 1.9004, 1.9004], atol=1e-4)


def test_mgda_on_orthogonal_gradients_over_three_steps():
  # For two orthogonal gradients the min-norm weights are
  # ŵ = [‖g_2‖², ‖g_1‖²] / (‖g_1‖² + ‖g_2‖²).
  # Step 1, J = diag(1, 2): ŵ_1 = [4, 1]/5 = [0.8, 0.2] = w_1 (first step);
  #   update [0.8·1, 0.2·2] = [0.8, 0.4].
  # Step 2, J = diag(3, 1): ŵ_2 = [1, 9]/10 = [0.1, 0.9];
  #   w_2 = 0.9 [0.8, 0.2] + 0.1 [0.1, 0.9] = [0.73, 0.27];
  #   update [0.73·3, 0.27·1] = [2.19, 0.27].
  # Step 3, J = diag(1, 2) again: ŵ_3 = [0.8, 0.2];
  #   w_3 = 0.9 [0.73, 0.27] + 0.1 [0.8, 0.2] = [0.737, 0.263];
  #   update [0.737, 0.526].
  first, second = np.diag([1.0, 2.0]), np.diag([3.0, 1.0])
  tx = mtl.smoothed(2, mtl.weightings.mgda())  # α = 0.9 by default.
  updates, states = _steps(tx, [first, second, first])
  expected_weights = [[0.8, 0.2], [0.73, 0.27], [0.737, 0.263]]
  expected_updates = [[0.8, 0.4], [2.19, 0.27], [0.737, 0.526]]
  for update, state, weights, want in zip(updates, states, expected_weights,
                                          expected_updates):
    np.testing.assert_allclose(state.weights, weights, rtol=1e-6)
    np.testing.assert_allclose(state.weighting_state.previous_weights,
                               weights, rtol=1e-6)
    np.testing.assert_allclose(update, want, rtol=1e-6)
  assert int(states[-1].weighting_state.count) == 3


def test_alpha_zero_is_the_inner_weighting():
  rng = np.random.default_rng(0)
  jacobians = [rng.normal(size=(3, 5)) for _ in range(3)]
  smoothed, _ = _steps(mtl.smoothed(3, mtl.weightings.mgda(), alpha=0.0),
                       jacobians)
  plain, _ = _steps(mtl.mgda(3), jacobians)
  for a, b in zip(smoothed, plain):
    np.testing.assert_array_equal(a, b)


def test_traced_alpha_under_inject_hyperparams():
  rng = np.random.default_rng(1)
  jacobians = [rng.normal(size=(3, 5)) for _ in range(3)]
  injected = optax.inject_hyperparams(mtl.smoothed, static_args=(
      'num_tasks', 'weighting'))(3, mtl.weightings.mgda(), alpha=0.5)
  direct = mtl.smoothed(3, mtl.weightings.mgda(), alpha=0.5)
  injected_updates, _ = _steps(injected, jacobians)
  direct_updates, _ = _steps(direct, jacobians)
  for a, b in zip(injected_updates, direct_updates):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_loss_level_inner_weighting_stays_loss_level():
  # DWA (τ = 2, period 1): w = 1 for the first two steps; at step 3,
  # r = L(2)/L(1) = [2, 1]/[1, 1] = [2, 1] and ŵ_3 = 2 softmax(r/2)
  # = 2 [1, e^-0.5]/(1 + e^-0.5) = [1.2449187, 0.7550813]. Smoothed:
  # w_1 = w_2 = [1, 1], w_3 = 0.9 [1, 1] + 0.1 ŵ_3 = [1.0244919, 0.9755081].
  weighting = mtl.weightings.smoothed(mtl.weightings.dwa())
  assert not weighting.reads_gram and weighting.reads_losses
  losses = [[1.0, 1.0], [2.0, 1.0], [3.0, 5.0]]
  hand = 2.0 / (1.0 + np.exp(-0.5)) * np.array([1.0, np.exp(-0.5)])
  expected = [[1.0, 1.0], [1.0, 1.0], 0.9 + 0.1 * hand]
  state = weighting.init(2)
  for step_losses, want in zip(losses, expected):  # The one-backward path.
    weights, state = mtl.weigh_losses(weighting, jnp.asarray(step_losses),
                                      state)
    np.testing.assert_allclose(weights, want, rtol=1e-6)
  # The per-task-gradient path: J = I, so the update is the weights.
  updates, _ = _steps(mtl.balancer(2, weighting), [np.eye(2)] * 3, losses)
  np.testing.assert_allclose(updates[-1], expected[-1], rtol=1e-6)


def test_bad_arguments_are_rejected():
  with pytest.raises(ValueError, match='alpha'):
    mtl.weightings.smoothed(mtl.weightings.mgda(), alpha=1.5)
  with pytest.raises(ValueError, match='mtl.Weighting'):
    mtl.weightings.smoothed(mtl.mgda(2))
  with pytest.raises(ValueError, match='smoothed\\(dwa\\) needs the per-task'):
    tx = mtl.smoothed(2, mtl.weightings.dwa())
    tx.update(jnp.eye(2), tx.init(jnp.zeros(2)))
