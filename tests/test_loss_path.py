"""The loss path (one backward pass) composes with optax like the gradient path.

A loss-level weighting is a value, so its one-backward path does not depend on
an attribute of a transformation: ``mtl.weigh_losses(weighting, losses,
state)`` works on the weighting's own state and on a balancer's state found
inside ``optax.chain`` and ``optax.inject_hyperparams``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtl_optax as mtl

NUM_TASKS = 3


def _problem():
  inputs = jax.random.normal(jax.random.key(0), (8, 3))
  targets = jax.random.normal(jax.random.key(1), (NUM_TASKS, 8))
  loss_scales = jnp.array([1.0, 10.0, 0.1])

  def task_losses(params):
    predictions = inputs @ params['w'] + params['b']
    return loss_scales * jnp.mean((predictions - targets) ** 2, axis=1)

  return {'w': jnp.full(3, 0.1), 'b': jnp.zeros(())}, task_losses


def test_loss_path_in_chain_and_inject_hyperparams_equals_gradient_path():
  params, task_losses = _problem()
  # Gradient path: per-task gradients through the injected balancer + adam.
  gradient_tx = optax.chain(
      optax.inject_hyperparams(mtl.uncertainty_weighting,
                               static_args=('num_tasks', 'form'))(
                                   num_tasks=NUM_TASKS, learning_rate=0.05),
      optax.adam(1e-2))
  # Loss path: the same chain's state; the balancer's state is advanced by
  # weigh_losses, then one backward pass of Σ w_t L_t goes through adam.
  adam = optax.adam(1e-2)
  loss_tx = optax.chain(
      optax.inject_hyperparams(mtl.uncertainty_weighting,
                               static_args=('num_tasks', 'form'))(
                                   num_tasks=NUM_TASKS, learning_rate=0.05),
      adam)

  @jax.jit
  def gradient_step(params, state):
    losses, task_grads = mtl.value_and_task_grads(task_losses)(params)
    updates, state = gradient_tx.update(task_grads, state, params,
                                        task_losses=losses)
    return optax.apply_updates(params, updates), state

  @jax.jit
  def loss_step(params, state):
    balancer_state, adam_state = state
    # The hyper-parameters live in the injected state, as in the other path.
    weighting = mtl.weightings.uncertainty_weighting(
        learning_rate=balancer_state.hyperparams['learning_rate'])

    def objective(params):
      losses = task_losses(params)
      weights, inner = mtl.weigh_losses(weighting, losses,
                                        balancer_state.inner_state)
      return jnp.dot(weights, losses), inner

    grads, inner = jax.grad(objective, has_aux=True)(params)
    updates, adam_state = adam.update(grads, adam_state, params)
    state = (balancer_state._replace(inner_state=inner), adam_state)
    return optax.apply_updates(params, updates), state

  gradient_params, gradient_state = params, gradient_tx.init(params)
  loss_params, loss_state = params, loss_tx.init(params)
  for _ in range(5):
    gradient_params, gradient_state = gradient_step(gradient_params,
                                                    gradient_state)
    loss_params, loss_state = loss_step(loss_params, loss_state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                         atol=1e-7),
                 loss_params, gradient_params)
  np.testing.assert_allclose(mtl.last_weights(loss_state),
                             mtl.last_weights(gradient_state), rtol=1e-6)
  # The log-variances moved (the state is really carried along).
  log_vars = loss_state[0].inner_state.weighting_state
  assert not np.allclose(jax.tree.leaves(log_vars)[0], 0.0)


def test_loss_path_on_the_weighting_state_alone():
  params, task_losses = _problem()
  weighting = mtl.weightings.logse()
  state = weighting.init(NUM_TASKS)
  losses = task_losses(params)
  weights, _ = mtl.weigh_losses(weighting, losses, state)
  # LogSE: w_t = 1 / (2 L_t) (hand derivation: d/dθ ½ log L_t = g_t / (2 L_t)).
  np.testing.assert_allclose(weights, 1.0 / (2.0 * losses), rtol=1e-6)


def test_loss_path_refuses_a_gramian_weighting():
  with np.testing.assert_raises_regex(ValueError, 'value_and_balanced_grad'):
    mtl.weigh_losses(mtl.weightings.mgda(), jnp.ones(NUM_TASKS),
                     optax.EmptyState())
