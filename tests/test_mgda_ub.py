"""MGDA-UB: representation_balanced_grads against the brute-force computation.

The brute force differentiates the task losses w.r.t. z = encoder(x) with
``jax.jacrev``, asks the balancer for the weights, then takes ``jax.grad`` of
``Σ_t w_t L_t`` through the whole network (encoder) and of ``Σ_t L_t``
(heads: each head's own task gradient). For MGDA the weights are also checked
against ``min_norm_weights`` of the z-Gramian and the min-norm optimality
conditions in float64 NumPy.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl

NUM_TASKS = 3
LOSS_SCALES = jnp.array([1.0, 30.0, 0.1])


def _encoder(params, inputs):
  hidden = jnp.tanh(inputs @ params['w1'] + params['b1'])
  return {'features': hidden @ params['w2'], 'hidden': hidden}


def _heads_losses(head_params, z, targets):
  # Both leaves of z feed the heads, so z is a genuine pytree.
  features = jnp.concatenate([z['features'], z['hidden'][:, :2]], axis=1)
  predictions = features @ head_params['kernel'] + head_params['bias']
  return LOSS_SCALES * jnp.mean((predictions - targets) ** 2, axis=0)


def _problem():
  keys = jax.random.split(jax.random.key(0), 6)
  encoder_params = {
      'w1': jax.random.normal(keys[0], (5, 6)),
      'b1': 0.1 * jax.random.normal(keys[1], (6,)),
      'w2': jax.random.normal(keys[2], (6, 4)) / 2.0}
  head_params = {'kernel': jax.random.normal(keys[3], (6, NUM_TASKS)),
                 'bias': jnp.zeros(NUM_TASKS)}
  inputs = jax.random.normal(keys[4], (7, 5))
  targets = jax.random.normal(keys[5], (7, NUM_TASKS))
  return encoder_params, head_params, inputs, targets


def _total_losses(encoder_params, head_params, inputs, targets):
  return _heads_losses(head_params, _encoder(encoder_params, inputs), targets)


def _z_task_grads(encoder_params, head_params, inputs, targets):
  z = _encoder(encoder_params, inputs)
  return jax.jacrev(_heads_losses, argnums=1)(head_params, z, targets)


def _brute_force(balancer, state, encoder_params, head_params, inputs,
                 targets):
  z_grads = _z_task_grads(encoder_params, head_params, inputs, targets)
  losses = _total_losses(encoder_params, head_params, inputs, targets)
  _, new_state = balancer.update(z_grads, state, task_losses=losses)
  weights = jax.lax.stop_gradient(new_state.weights)
  encoder_grads = jax.grad(lambda p: jnp.dot(weights, _total_losses(
      p, head_params, inputs, targets)))(encoder_params)
  head_grads = jax.grad(lambda h: jnp.sum(_total_losses(
      encoder_params, h, inputs, targets)))(head_params)
  return losses, (encoder_grads, head_grads), new_state


@functools.partial(jax.jit, static_argnums=0)
def _both_ways(balancer, state, brute_state, *problem):
  """One step of the helper and of the brute force (one compilation)."""
  step = mtl.representation_balanced_grads(balancer, _encoder, _heads_losses)
  encoder_params, head_params, inputs, targets = problem
  return (step(encoder_params, head_params, state, inputs, targets),
          _brute_force(balancer, brute_state, *problem))


# One balancer of each kind: min-norm, its normalised variant, a stateful
# one that needs losses, and a loss-level one.
BALANCERS = {
    'mgda': lambda: mtl.mgda(NUM_TASKS),
    'central_direction': lambda: mtl.central_direction(NUM_TASKS),
    'task_tensioner': lambda: mtl.task_tensioner(NUM_TASKS, period=2),
    'uncertainty_weighting': lambda: mtl.uncertainty_weighting(NUM_TASKS),
}


@pytest.mark.parametrize('name', [
    name if name == 'mgda' else pytest.param(name, marks=pytest.mark.slow)
    for name in sorted(BALANCERS)])
def test_equals_brute_force_for_every_balancer(name):
  balancer = BALANCERS[name]()
  problem = _problem()
  state = brute_state = balancer.init(None)
  # Several steps, so that stateful balancers (the tensioner's ring buffer
  # with period 2, uncertainty weighting's log-variances) move on.
  for _ in range(4):
    (losses, grads, state), (want_losses, want_grads, brute_state) = (
        _both_ways(balancer, state, brute_state, *problem))
    np.testing.assert_allclose(losses, want_losses, rtol=1e-6)
    np.testing.assert_allclose(state.weights, brute_state.weights,
                               rtol=1e-5, atol=1e-6)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5,
                                   atol=1e-5), grads, want_grads)
  assert np.all(np.isfinite(state.weights))


def _heads_losses_with_aux(head_params, z, targets):
  losses = _heads_losses(head_params, z, targets)
  return losses, {'total': jnp.sum(losses)}


@functools.cache
def _mgda_ub_step():
  """MGDA-UB with an auxiliary output, compiled once for the tests below."""
  balancer = mtl.mgda(NUM_TASKS)
  step = jax.jit(mtl.representation_balanced_grads(
      balancer, _encoder, _heads_losses_with_aux, has_aux=True))
  return balancer.init(None), step


def test_mgda_ub_weights_are_the_min_norm_point_of_the_z_gramian():
  encoder_params, head_params, inputs, targets = _problem()
  init_state, step = _mgda_ub_step()
  _, _, state = step(encoder_params, head_params, init_state, inputs, targets)
  z_grads = _z_task_grads(encoder_params, head_params, inputs, targets)
  jacobian = np.concatenate(
      [np.asarray(leaf, np.float64).reshape(NUM_TASKS, -1)
       for leaf in jax.tree.leaves(z_grads)], axis=1)
  gram = jacobian @ jacobian.T
  np.testing.assert_allclose(
      state.weights, mtl.min_norm_weights(jnp.asarray(gram, jnp.float32)),
      rtol=1e-5, atol=1e-6)
  # Min-norm optimality on the simplex (KKT): (G w)_t >= wᵀ G w for every t,
  # with equality where w_t > 0.
  weights = np.asarray(state.weights, np.float64)
  assert abs(weights.sum() - 1.0) < 1e-6 and np.all(weights >= 0)
  gradient, value = gram @ weights, weights @ gram @ weights
  assert np.all(gradient >= value - 1e-4 * value)
  np.testing.assert_allclose(gradient[weights > 1e-4], value, rtol=1e-4)


def test_heads_get_their_own_task_gradient_and_aux_passes_through():
  encoder_params, head_params, inputs, targets = _problem()
  init_state, step = _mgda_ub_step()
  (losses, aux), (_, head_grads), _ = step(
      encoder_params, head_params, init_state, inputs, targets)
  np.testing.assert_allclose(aux['total'], jnp.sum(losses), rtol=1e-6)
  # Column t of the head kernel (and bias entry t) belongs to task t.
  per_task = jax.jacrev(lambda h: _total_losses(
      encoder_params, h, inputs, targets))(head_params)
  for t in range(NUM_TASKS):
    np.testing.assert_allclose(head_grads['kernel'][:, t],
                               per_task['kernel'][t, :, t], rtol=1e-5)
    np.testing.assert_allclose(head_grads['bias'][t], per_task['bias'][t, t],
                               rtol=1e-5)


def test_non_finite_loss_gives_non_finite_grads_and_keeps_state():
  encoder_params, head_params, inputs, targets = _problem()
  state, step = _mgda_ub_step()
  _, (encoder_grads, _), new_state = step(
      encoder_params, head_params, state, inputs,
      targets.at[0, 1].set(jnp.nan))
  assert not np.all(np.isfinite(encoder_grads['w1']))
  jax.tree.map(np.testing.assert_array_equal, new_state, state)
