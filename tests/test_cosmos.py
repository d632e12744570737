"""COSMOS: weights (∂/∂L of the scalarisation) and value."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from one_backward import assert_both_paths_agree

LOSSES = jnp.array([0.5, 2.0, 8.0])
PREFERENCE = [0.2, 0.3, 0.5]


def _weights(weighting, losses):
  return np.asarray(mtl.weigh_losses(weighting, losses,
                                     weighting.init(losses.shape[0]))[0])


def test_matches_torchjd():
  # TorchJD 0.18, torchjd.scalarization.COSMOS(lambda_=1, weights=r) on
  # [0.5, 2, 8]; the weights are the gradient of its value.
  np.testing.assert_allclose(
      mtl.cosmos_value(LOSSES, 1.0, preference=PREFERENCE), 3.777100,
      atol=1e-4)
  np.testing.assert_allclose(
      _weights(mtl.weightings.cosmos(1.0, preference=PREFERENCE), LOSSES),
      [0.167489, 0.268136, 0.509998], atol=1e-4)


def test_by_hand():
  # r = [1, 0], L = [3, 4]: rᵀL = 3, ‖L‖ = 5, cos = 0.6, λ = 2:
  # value = 3 − 1.2 = 1.8; w = r − (2/5)(r − (3/25) L)
  #   = [1, 0] − 0.4 [1 − 0.36, −0.48] = [0.744, 0.192].
  losses = jnp.array([3.0, 4.0])
  np.testing.assert_allclose(
      mtl.cosmos_value(losses, 2.0, preference=[1.0, 0.0]), 1.8, rtol=1e-6)
  np.testing.assert_allclose(
      _weights(mtl.weightings.cosmos(2.0, preference=[1.0, 0.0]), losses),
      [0.744, 0.192], rtol=1e-6)


def test_weights_are_the_gradient_of_the_value():
  losses = jnp.asarray(np.random.default_rng(1).uniform(0.1, 4.0, 5),
                       jnp.float32)
  preference = [0.1, 0.3, 0.2, 0.3, 0.1]
  gradient = jax.grad(mtl.cosmos_value)(losses, 0.7, preference=preference)
  np.testing.assert_allclose(
      _weights(mtl.weightings.cosmos(0.7, preference=preference), losses),
      gradient, rtol=1e-5, atol=1e-7)


def test_zero_penalty_is_the_linear_scalarisation():
  np.testing.assert_allclose(
      _weights(mtl.weightings.cosmos(0.0, preference=PREFERENCE), LOSSES),
      PREFERENCE, rtol=1e-7)
  np.testing.assert_allclose(
      mtl.cosmos_value(LOSSES, 0.0, preference=PREFERENCE), 4.7, rtol=1e-6)


def test_zero_losses_give_the_preference():
  # The cosine is undefined at L = 0; its term is taken as 0.
  zeros = jnp.zeros(3)
  np.testing.assert_allclose(
      _weights(mtl.weightings.cosmos(1.0, preference=PREFERENCE), zeros),
      PREFERENCE)
  assert float(mtl.cosmos_value(zeros, 1.0)) == 0.0
  assert np.all(np.isfinite(jax.grad(mtl.cosmos_value)(zeros, 1.0)))


def test_huge_losses_do_not_overflow():
  # ‖L‖² would overflow float32; the cosine is scale-free, its gradient
  # shrinks as 1/‖L‖, so the weights tend to r.
  huge = LOSSES * 1e30
  weights = _weights(mtl.weightings.cosmos(1.0, preference=PREFERENCE), huge)
  np.testing.assert_allclose(weights, PREFERENCE, rtol=1e-6)
  np.testing.assert_allclose(
      float(mtl.cosmos_value(huge, 1.0, preference=PREFERENCE)), 4.7e30,
      rtol=1e-6)


def test_uniform_default_preference():
  # r = [1/2, 1/2], L = [2, 2]: rᵀL = 2 and cos(r, L) = 1, so the value is 1;
  # w = r − (1/(‖r‖‖L‖)) (r − (2/8) L) = r − 0 = r.
  losses = jnp.array([2.0, 2.0])
  np.testing.assert_allclose(mtl.cosmos_value(losses, 1.0), 1.0, rtol=1e-6)
  np.testing.assert_allclose(_weights(mtl.weightings.cosmos(1.0), losses),
                             [0.5, 0.5], rtol=1e-6)


def test_one_backward_path_matches_task_gradients():
  assert_both_paths_agree(mtl.cosmos(3, 0.5, preference=[0.5, 0.3, 0.2]), 3)


@pytest.mark.parametrize('kwargs, match', [
    ({'cosine_penalty': -0.1}, 'cosine_penalty'),
    ({'cosine_penalty': 1.0, 'preference': [1.0, -1.0, 1.0]}, 'preference'),
    ({'cosine_penalty': 1.0, 'preference': [0.0, 0.0, 0.0]}, 'preference'),
])
def test_bad_hyperparameters_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mtl.cosmos(3, **kwargs)
  with pytest.raises(ValueError, match=match):
    mtl.cosmos_value(LOSSES, **kwargs)
  with pytest.raises(ValueError, match='preference'):
    mtl.cosmos(3, 1.0, preference=[0.5, 0.5])
