"""A Flax NNX training step through the Gramian engine.

Three ``nnx.jit`` steps of ``value_and_balanced_grad(..., upgrad)`` fed to
``nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)`` must leave the
parameters where three steps of the stacked path put them:
``value_and_task_grads`` then ``optax.chain(mtl.upgrad(T), optax.adam(1e-2))``
on the plain parameter pytree, under ``jax.jit``. The heads are
task-specific on both paths.

The dict form of ``task_specific`` ({'trunk_in': False, ..., 'heads': True})
works on an ``nnx.State`` (a mapping) as the callable form does, through
``nnx.Optimizer``, which forwards ``task_losses`` to ``tx.update``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
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


# ---------------------------------------------------------------------------
# task_specific on an nnx.State: the dict form (a prefix by key) and the
# callable form mark the same leaves.

HEADS_BY_KEY = {'trunk_in': False, 'trunk_out': False, 'heads': True}


def test_dict_task_specific_marks_the_heads_of_an_nnx_state():
  params = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
  by_key = mtl._src.base.task_specific_flags(HEADS_BY_KEY, params)
  by_path = mtl._src.base.task_specific_flags(is_head, params)
  # Leaves flatten in key order: the heads (3 x bias, kernel), then
  # trunk_in and trunk_out (bias, kernel each).
  assert by_key == by_path == [True] * (2 * NUM_TASKS) + [False] * 4
  # Per head, or per head and leaf, as far down as the mask goes.
  finer = {'trunk_in': False, 'trunk_out': {'bias': False, 'kernel': False},
           'heads': {0: True, 1: True, 2: {'bias': True, 'kernel': True}}}
  assert mtl._src.base.task_specific_flags(finer, params) == by_key


def test_dict_task_specific_that_misses_a_key_names_the_callable_form():
  params = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
  task_grads = jax.tree.map(
      lambda leaf: jnp.zeros((NUM_TASKS,) + leaf.shape), params)
  tx = mtl.upgrad(NUM_TASKS, task_specific={'trunk': False, 'heads': True})
  with pytest.raises(ValueError, match="no entry 'trunk_in'.*callable form"):
    tx.update(task_grads, tx.init(params), params)


def _one_nnx_step(task_specific):
  """``(params before, params after)`` one ``nnx.Optimizer`` step of UPGrad
  then SGD(0.1) on the conflicting tasks of ``_data``."""
  x, targets = _data()
  model = Model(nnx.Rngs(0))
  tx = optax.chain(mtl.upgrad(NUM_TASKS, task_specific=task_specific),
                   optax.sgd(0.1))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))

  @nnx.jit
  def step(model, optimizer, x, targets):
    graphdef, params = nnx.split(model, nnx.Param)
    losses, task_grads = mtl.value_and_task_grads(task_losses_of(graphdef))(
        params, x, targets)
    # nnx.Optimizer forwards the keyword arguments to tx.update.
    optimizer.update(model, task_grads, task_losses=losses)

  step(model, optimizer, x, targets)
  return before, nnx.state(model, nnx.Param)


@pytest.mark.slow  # two nnx.jit compilations, about 6 s on one core
def test_nnx_optimizer_steps_each_head_on_its_own_task_gradient():
  x, targets = _data()
  before, after = _one_nnx_step(HEADS_BY_KEY)
  graphdef = nnx.graphdef(Model(nnx.Rngs(0)))
  # Head t enters task t's loss only, so its gradient of Σ_t L_t is its own
  # task's gradient; a task-specific leaf steps on it unweighted (Σ_t g_t
  # over its stacked rows): SGD moves it by -0.1 times that gradient.
  grads = jax.grad(lambda p: jnp.sum(task_losses_of(graphdef)(p, x, targets)))(
      before)
  flags = mtl._src.base.task_specific_flags(HEADS_BY_KEY, before)
  for flag, new, old, grad in zip(flags, jax.tree.leaves(after),
                                  jax.tree.leaves(before),
                                  jax.tree.leaves(grads)):
    if flag:
      np.testing.assert_allclose(new - old, -0.1 * grad, rtol=1e-5,
                                 atol=1e-7)
  # Without the mask the heads are weighted too: UPGrad's weights on these
  # conflicting tasks are not all 1, so the heads move otherwise.
  _, unmasked = _one_nnx_step(None)
  head_moves = [np.max(np.abs(np.asarray(a) - np.asarray(b)))
                for flag, a, b in zip(flags, jax.tree.leaves(after),
                                      jax.tree.leaves(unmasked)) if flag]
  assert max(head_moves) > 1e-4, head_moves
