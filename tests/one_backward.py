"""Checks a LossBalancer's one-backward path against its per-task-gradient path.

Both paths run side by side for several steps of gradient descent on a small
regression problem, so the losses change and a stateful method's state
evolves; the updates and the states must agree at every step.
"""

import jax
import jax.numpy as jnp
import numpy as np

import mtl_optax as mtl


def _problem(num_tasks):
  inputs = jax.random.normal(jax.random.key(0), (8, 3))
  targets = jax.random.normal(jax.random.key(1), (num_tasks, 8))
  loss_scales = 1.0 + jnp.arange(num_tasks, dtype=jnp.float32)

  def task_losses(params):
    predictions = inputs @ params['w'] + params['b']
    return loss_scales * jnp.mean((predictions - targets) ** 2, axis=1)

  return {'w': jnp.zeros(3), 'b': jnp.zeros(())}, task_losses


def _raw(tree):
  return jax.tree.map(
      lambda x: jax.random.key_data(x)
      if jnp.issubdtype(jnp.asarray(x).dtype, jax.dtypes.prng_key) else x, tree)


def assert_both_paths_agree(tx, num_tasks, num_steps=4, learning_rate=0.1):
  params, task_losses = _problem(num_tasks)

  @jax.jit
  def step(params, grads_state, losses_state):
    losses, task_grads = mtl.value_and_task_grads(task_losses)(params)
    updates, grads_state = tx.update(task_grads, grads_state, params,
                                     task_losses=losses)

    def objective(params):
      losses = task_losses(params)
      weights, new_state = tx.weigh_losses(losses, losses_state)
      return jnp.dot(weights, losses), new_state

    grads, losses_state = jax.grad(objective, has_aux=True)(params)
    params = jax.tree.map(lambda p, u: p - learning_rate * u, params, updates)
    return params, grads_state, losses_state, updates, grads

  grads_state = losses_state = tx.init(params)
  for _ in range(num_steps):
    params, grads_state, losses_state, updates, grads = step(
        params, grads_state, losses_state)
    # The same terms summed in a different order: float32 round-off only.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-5, atol=1e-6), grads, updates)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                 _raw(losses_state), _raw(grads_state))
  return grads_state
