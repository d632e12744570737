"""STCH: smooth Tchebycheff weights (∂/∂L of the scalarisation) and value."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from one_backward import assert_both_paths_agree

LOSSES = jnp.array([0.5, 2.0, 8.0])


def _weights(weighting, losses):
  return np.asarray(mtl.weigh_losses(weighting, losses,
                                     weighting.init(losses.shape[0]))[0])


@pytest.mark.parametrize('mu, value, weights', [
    # TorchJD 0.18, torchjd.scalarization.STCH(mu) on [0.5, 2, 8]; the
    # weights are the gradient of its value with respect to the values.
    (1.0, 2.863401, [0.022475, 0.037055, 0.273803]),
    (0.1, 2.666667, [0.0, 0.0, 0.333333]),
])
def test_matches_torchjd(mu, value, weights):
  np.testing.assert_allclose(mtl.stch_value(LOSSES, mu), value, atol=1e-4)
  np.testing.assert_allclose(_weights(mtl.weightings.stch(mu), LOSSES),
                             weights, atol=1e-4)


def test_by_hand_with_preference_and_reference():
  # y = λ (L − z) = [0.75 · 1, 0.25 · (3 − 1)] = [0.75, 0.5]; μ = 1:
  # value = log(e^0.75 + e^0.5), w = λ e^y / Σ e^y.
  losses = jnp.array([1.0, 3.0])
  kwargs = {'preference': [0.75, 0.25], 'reference': [0.0, 1.0]}
  exps = [math.exp(0.75), math.exp(0.5)]
  np.testing.assert_allclose(mtl.stch_value(losses, 1.0, **kwargs),
                             math.log(sum(exps)), rtol=1e-6)
  np.testing.assert_allclose(
      _weights(mtl.weightings.stch(1.0, **kwargs), losses),
      [0.75 * exps[0] / sum(exps), 0.25 * exps[1] / sum(exps)], rtol=1e-6)


@pytest.mark.parametrize('mu', [1.0, 0.3, 0.01])
def test_weights_are_the_gradient_of_the_value(mu):
  losses = jnp.asarray(np.random.default_rng(0).uniform(0.1, 4.0, 5),
                       jnp.float32)
  kwargs = {'preference': [0.1, 0.3, 0.2, 0.3, 0.1],
            'reference': [0.0, 0.1, 0.0, 0.2, 0.05]}
  gradient = jax.grad(mtl.stch_value)(losses, mu, **kwargs)
  np.testing.assert_allclose(_weights(mtl.weightings.stch(mu, **kwargs),
                                      losses), gradient, rtol=1e-5, atol=1e-7)


def test_value_bounds_the_tchebycheff_maximum():
  # max_t y_t <= g_μ <= max_t y_t + μ log T (log-sum-exp bounds).
  losses = jnp.array([0.3, 5.0, 4.9, 1.0])
  worst = float(jnp.max(losses)) / 4
  for mu in (1.0, 0.1, 0.01):
    value = float(mtl.stch_value(losses, mu))
    assert worst <= value <= worst + mu * math.log(4) + 1e-6


def test_small_mu_and_huge_losses_stay_finite():
  losses = jnp.array([1e30, 3e30, 2e30])
  weights = _weights(mtl.weightings.stch(1e-6), losses)
  np.testing.assert_allclose(weights, [0.0, 1 / 3, 0.0], atol=1e-7)
  assert np.isfinite(float(mtl.stch_value(losses, 1e-6)))


def test_one_backward_path_matches_task_gradients():
  assert_both_paths_agree(mtl.stch(3, 0.5), 3)


def test_the_balancer_sums_the_weighted_gradients():
  grads = jnp.array([[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]])
  tx = mtl.stch(3, 1.0)
  updates, state = tx.update(grads, tx.init(jnp.zeros(2)), task_losses=LOSSES)
  expected = np.array([0.022475, 0.037055, 0.273803])
  np.testing.assert_allclose(state.weights, expected, atol=1e-5)
  np.testing.assert_allclose(updates, expected @ np.asarray(grads), atol=1e-5)


@pytest.mark.parametrize('kwargs, match', [
    ({'mu': 0.0}, 'mu'),
    ({'mu': -1.0}, 'mu'),
    ({'preference': [1.0, -1.0, 1.0]}, 'preference'),
    ({'preference': [0.0, 0.0, 0.0]}, 'preference'),
    ({'preference': [[1.0, 1.0, 1.0]]}, 'preference'),
    ({'reference': [0.0, np.nan, 0.0]}, 'reference'),
])
def test_bad_hyperparameters_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mtl.stch(3, **kwargs)
  with pytest.raises(ValueError, match=match):
    mtl.stch_value(LOSSES, **kwargs)


def test_vector_of_the_wrong_length_raises():
  with pytest.raises(ValueError, match='preference'):
    mtl.stch(3, preference=[0.5, 0.5])
  with pytest.raises(ValueError, match='reference'):
    mtl.stch_value(LOSSES, reference=[0.0, 0.0])
  with pytest.raises(ValueError, match='shape'):
    mtl.stch_value(jnp.ones((2, 2)))
