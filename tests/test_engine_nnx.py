"""A Flax NNX training step through the Gramian engine.

Three ``nnx.jit`` steps of ``value_and_balanced_grad(..., upgrad)`` fed to
``nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)`` must leave the
parameters where three steps of the stacked path put them:
``value_and_task_grads`` then ``optax.chain(mtl.upgrad(T), optax.adam(1e-2))``
on the plain parameter pytree, under ``jax.jit``. The heads are
task-specific on both paths.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import mtl_optax as mtl

NUM_TASKS = 3
NUM_STEPS = 3


class Model(nnx.Module):
  """A shared two-layer trunk and one scalar linear head per task."""

  def __init__(self, rngs: nnx.Rngs):
    self.trunk_in = nnx.Linear(4, 16, rngs=rngs)
    self.trunk_out = nnx.Linear(16, 16, rngs=rngs)
    self.heads = nnx.List([nnx.Linear(16, 1, rngs=rngs)
                           for _ in range(NUM_TASKS)])

  def __call__(self, x):
    hidden = jnp.tanh(self.trunk_out(jnp.tanh(self.trunk_in(x))))
    return jnp.stack([head(hidden)[:, 0] for head in self.heads])  # [T, B]


def _data():
  x = jax.random.normal(jax.random.key(1), (8, 4))
  # Task 1 wants the opposite of task 0 and task 2 a different function:
  # their trunk gradients conflict, so UPGrad's projection matters.
  targets = jnp.stack([jnp.sin(x[:, 0]), -jnp.sin(x[:, 0]),
                       x[:, 1] * x[:, 2]])
  return x, targets


def is_head(tree):
  """True on the head leaves of an ``nnx.State`` (or its gradients)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: 'heads' in jax.tree_util.keystr(path), tree)


def task_losses_of(graphdef):
  def task_losses(params, x, targets):
    outputs = nnx.merge(graphdef, params)(x)
    return jnp.mean((outputs - targets) ** 2, axis=1)
  return task_losses


def test_nnx_engine_step_equals_the_stacked_path():
  x, targets = _data()

  # Engine: nnx.jit, nnx.Optimizer, the weighting's state beside it.
  model = Model(nnx.Rngs(0))
  graphdef, initial = nnx.split(model, nnx.Param)
  initial = jax.tree.map(jnp.copy, initial)
  weighting = mtl.weightings.upgrad()
  balanced = mtl.value_and_balanced_grad(
      task_losses_of(graphdef), weighting, task_specific=is_head)
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def engine_step(model, optimizer, weighting_state, x, targets):
    params = nnx.state(model, nnx.Param)
    losses, grads, weighting_state = balanced(params, weighting_state, x,
                                              targets)
    optimizer.update(model, grads)
    return losses, weighting_state

  weighting_state = weighting.init(NUM_TASKS)
  engine_losses = []
  for _ in range(NUM_STEPS):
    losses, weighting_state = engine_step(model, optimizer, weighting_state,
                                          x, targets)
    engine_losses.append(losses)

  # Stacked: T x P gradients, then the balancer chained with Adam.
  task_losses = task_losses_of(graphdef)
  tx = optax.chain(mtl.upgrad(NUM_TASKS, task_specific=is_head),
                   optax.adam(1e-2))

  @jax.jit
  def stacked_step(params, state):
    losses, task_grads = mtl.value_and_task_grads(task_losses)(
        params, x, targets)
    updates, state = tx.update(task_grads, state, params, task_losses=losses)
    return optax.apply_updates(params, updates), state, losses

  params, state = initial, tx.init(initial)
  weights = []
  for step in range(NUM_STEPS):
    params, state, losses = stacked_step(params, state)
    weights.append(np.asarray(state[0].weights))
    np.testing.assert_allclose(engine_losses[step], losses, rtol=1e-5)

  # The trunk gradients conflict: UPGrad's weights are not the mean's.
  assert np.ptp(weights[0]) > 1e-2, weights[0]
  trained = nnx.state(model, nnx.Param)
  leaves = jax.tree.leaves(trained)
  assert len(leaves) == 4 + 2 * NUM_TASKS
  for leaf, expected, start in zip(leaves, jax.tree.leaves(params),
                                   jax.tree.leaves(initial)):
    np.testing.assert_allclose(leaf, expected, rtol=1e-5, atol=1e-7)
    # Every leaf moved: Adam's first steps are about lr = 1e-2 per entry.
    assert np.max(np.abs(np.asarray(leaf) - np.asarray(start))) > 5e-3
