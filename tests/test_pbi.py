"""PBI: weights (∂/∂L of the scalarisation) and value."""

import math

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
  # TorchJD 0.18, torchjd.scalarization.PBI(theta=5, weights=w) on
  # [0.5, 2, 8]; the weights are the gradient of its value.
  np.testing.assert_allclose(
      mtl.pbi_value(LOSSES, 5.0, preference=PREFERENCE), 23.529140,
      atol=1e-4)
  np.testing.assert_allclose(
      _weights(mtl.weightings.pbi(5.0, preference=PREFERENCE), LOSSES),
      [-2.777911, -2.202042, 3.665272], atol=1e-4)


def test_by_hand_with_reference():
  # w = [1, 1] → ŵ = [1, 1]/√2; z = [1, 0], L = [2, 4] → f = [1, 4]:
  # d₁ = 5/√2, p = f − d₁ŵ = [−1.5, 1.5], d₂ = 1.5√2; θ = 2:
  # value = 5/√2 + 3√2, weights = ŵ + 2 p/d₂ = [1/√2 − √2, 1/√2 + √2].
  losses = jnp.array([2.0, 4.0])
  kwargs = {'preference': [1.0, 1.0], 'reference': [1.0, 0.0]}
  root2 = math.sqrt(2.0)
  np.testing.assert_allclose(mtl.pbi_value(losses, 2.0, **kwargs),
                             5 / root2 + 3 * root2, rtol=1e-6)
  np.testing.assert_allclose(
      _weights(mtl.weightings.pbi(2.0, **kwargs), losses),
      [1 / root2 - root2, 1 / root2 + root2], rtol=1e-6)


def test_weights_are_the_gradient_of_the_value():
  losses = jnp.asarray(np.random.default_rng(2).uniform(0.1, 4.0, 5),
                       jnp.float32)
  kwargs = {'preference': [0.1, 0.3, 0.2, 0.3, 0.1],
            'reference': [0.0, 0.1, 0.0, 0.2, 0.05]}
  gradient = jax.grad(mtl.pbi_value)(losses, 3.0, **kwargs)
  np.testing.assert_allclose(
      _weights(mtl.weightings.pbi(3.0, **kwargs), losses), gradient,
      rtol=1e-5, atol=1e-6)


def test_on_the_ray_the_weights_are_the_direction():
  # L ∝ w: d₂ = 0, where PBI is not differentiable; the weights are ŵ. Equal
  # losses under the uniform default, and a single task, are on the ray.
  direction = np.full(3, 1 / math.sqrt(3))
  np.testing.assert_allclose(
      _weights(mtl.weightings.pbi(5.0), jnp.array([1.7, 1.7, 1.7])),
      direction, rtol=1e-6)
  np.testing.assert_allclose(
      _weights(mtl.weightings.pbi(5.0, preference=[1.0, 2.0]),
               jnp.array([0.3, 0.6])), np.array([1.0, 2.0]) / math.sqrt(5),
      rtol=1e-6)
  np.testing.assert_allclose(
      _weights(mtl.weightings.pbi(5.0), jnp.array([2.5])), [1.0])
  np.testing.assert_allclose(mtl.pbi_value(jnp.array([1.7, 1.7, 1.7])),
                             1.7 * math.sqrt(3), rtol=1e-6)
  assert np.all(np.isfinite(
      jax.grad(mtl.pbi_value)(jnp.array([1.7, 1.7, 1.7]))))


def test_zero_theta_is_the_projection():
  np.testing.assert_allclose(
      _weights(mtl.weightings.pbi(0.0, preference=PREFERENCE), LOSSES),
      np.array(PREFERENCE) / np.linalg.norm(PREFERENCE), rtol=1e-6)


def test_huge_losses_do_not_overflow():
  # p/‖p‖ is scale-free: the same weights for L and 1e30 L.
  np.testing.assert_allclose(
      _weights(mtl.weightings.pbi(5.0, preference=PREFERENCE), LOSSES * 1e30),
      [-2.777911, -2.202042, 3.665272], atol=1e-4)
  np.testing.assert_allclose(
      float(mtl.pbi_value(LOSSES * 1e30, 5.0, preference=PREFERENCE)),
      23.529140e30, rtol=1e-5)


def test_one_backward_path_matches_task_gradients():
  assert_both_paths_agree(mtl.pbi(3, 5.0, preference=[0.5, 0.3, 0.2]), 3)


@pytest.mark.parametrize('kwargs, match', [
    ({'theta': -1.0}, 'theta'),
    ({'preference': [1.0, -1.0, 1.0]}, 'preference'),
    ({'preference': [0.0, 0.0, 0.0]}, 'preference'),
    ({'reference': [0.0, np.inf, 0.0]}, 'reference'),
])
def test_bad_hyperparameters_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mtl.pbi(3, **kwargs)
  with pytest.raises(ValueError, match=match):
    mtl.pbi_value(LOSSES, **kwargs)
  with pytest.raises(ValueError, match='reference'):
    mtl.pbi(3, reference=[0.0, 0.0])
