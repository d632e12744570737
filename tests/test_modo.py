"""MoDo: expected values hand-derived from Algorithm 1 of Chen et al. (JMLR
2024) with the ℓ₂ term of the authors' implementation, as the docstring
states it: λ ← Π_Δ(λ − γ (J₂ J₃ᵀ λ + ρ λ)), d = J₁ᵀ λ."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl

BATCH_2 = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
BATCH_3 = jnp.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
UPDATE_BATCH = jnp.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])


def test_two_steps_from_independent_batches():
  # A = J₂ J₃ᵀ = [[2, 0, 0], [0, 1, 0], [2, 1, 0]]; γ = 1, ρ = 0.2.
  # Step 1, λ = [1/3]*3: Aλ = [2/3, 1/3, 1], + ρλ = [.73333, .4, 1.06667],
  #   λ − γ(·) = [−.4, −.06667, −.73333]. Projection: sorted −.06667, −.4,
  #   −.73333; cumulative sums − 1: −1.06667, −1.46667, −2.2; the support
  #   test u_k − (Σ − 1)/k > 0 holds for k = 1 (1), 2 (.33333), not 3 (0):
  #   θ = −1.46667/2 = −.73333, λ = [.33333, .66667, 0].
  #   d = .33333 [1, 0] + .66667 [0, 1] = [.33333, .66667].
  tx = mtl.modo(3, learning_rate=1.0, rho=0.2)
  step = jax.jit(lambda g, s: tx.update(g, s, task_grads_2=BATCH_2,
                                        task_grads_3=BATCH_3))
  updates, state = step(UPDATE_BATCH, tx.init(None))
  np.testing.assert_allclose(state.weights, [1 / 3, 2 / 3, 0.0], atol=1e-6)
  np.testing.assert_allclose(updates, [1 / 3, 2 / 3], atol=1e-6)
  # Step 2, λ = [1/3, 2/3, 0]: Aλ = [2/3, 2/3, 4/3], + ρλ =
  #   [.73333, .8, 1.33333], λ − γ(·) = [−.4, −.13333, −1.33333]. Sorted
  #   −.13333, −.4, −1.33333; sums − 1: −1.13333, −1.53333, −2.86667; support
  #   k = 2 (−.4 + .76667 > 0; −1.33333 + .95556 < 0): θ = −.76667,
  #   λ = [.36667, .63333, 0], d = [.36667, .63333].
  updates, state = step(UPDATE_BATCH, state)
  np.testing.assert_allclose(state.weights, [11 / 30, 19 / 30, 0.0],
                             atol=1e-6)
  np.testing.assert_allclose(state.weighting_state.task_weights,
                             [11 / 30, 19 / 30, 0.0], atol=1e-6)
  np.testing.assert_allclose(updates, [11 / 30, 19 / 30], atol=1e-6)


def test_weights_use_the_true_scale_of_the_cross_product():
  # Halving both batches makes J₂ J₃ᵀ = A/4, a smaller step (γ is absolute):
  # Aλ/4 = [1/6, 1/12, 1/4], + ρλ = [.23333, .15, .31667],
  # λ − γ(·) = [.1, .18333, .01667], all in the support (sum .3):
  # θ = (.3 − 1)/3 = −.23333, λ = [1/3, 5/12, 1/4].
  tx = mtl.modo(3, learning_rate=1.0, rho=0.2)
  _, state = tx.update(UPDATE_BATCH, tx.init(None),
                       task_grads_2=BATCH_2 * 0.5, task_grads_3=BATCH_3 * 0.5)
  np.testing.assert_allclose(state.weights, [1 / 3, 5 / 12, 1 / 4],
                             atol=1e-6)
  # At 2^70 the product 2^140 A leaves float32: every step is clipped to
  # 1e30, so all are equal and the projection (blind to a common shift)
  # keeps λ uniform; weights and update stay finite.
  factor = 2.0 ** 70
  updates, state = tx.update(UPDATE_BATCH, tx.init(None),
                             task_grads_2=BATCH_2 * factor,
                             task_grads_3=BATCH_3 * factor)
  assert np.all(np.isfinite(updates))
  np.testing.assert_allclose(state.weights, [1 / 3] * 3, atol=1e-6)


@pytest.mark.parametrize('kwargs, name', [
    ({'learning_rate': 0.0}, 'learning_rate'),
    ({'learning_rate': float('nan')}, 'learning_rate'),
    ({'rho': -1.0}, 'rho'),
])
def test_invalid_hyperparameters_are_rejected(kwargs, name):
  with pytest.raises(ValueError, match=name):
    mtl.modo(3, **kwargs)
