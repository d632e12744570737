"""Resuming from a checkpoint is part of every method's contract.

Each catalog entry trains a tiny two-layer network twice with an
orbax-checkpoint ``CheckpointManager`` saving the parameters and the whole
optimizer state every ``SAVE_EVERY`` steps: once without a break, and once
stopped after ``STOP_AT`` steps and started again. The restart builds a
fresh state and restores the last checkpoint into it (the fresh state is
the restore target, so NamedTuples, PRNG keys and T x P states come back
with their types, shapes and dtypes), then trains on. Both runs must end on
the same bits. The step is compiled once, ahead of time, and a restored
leaf of another structure, shape or dtype could not be passed to it.
``docs/guides/checkpointing.md`` shows the same loop."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import mtl_optax as mtl
from mtl_optax.catalog import METHODS

NUM_TASKS = 4
NUM_STEPS = 5
SAVE_EVERY = 2
STOP_AT = 3  # the interrupted job stops here ...
RESUME_FROM = 2  # ... and resumes from its last checkpoint
BATCH = 6
# One method of each kind runs in the everyday subset; the full sweep over
# the catalog (about a second per method on one core) in the full suite.
EVERYDAY = frozenset({
    'upgrad',  # a stateless Gramian weighting
    'pcgrad',  # a PRNG key in its state, split every step
    'db_mtl',  # T x P moving averages of the task gradients
    'moco',  # T x P tracked gradients and tracked weights
    'uncertainty_weighting.kendall',  # loss-level, learnt log-variances
})


def test_the_everyday_methods_are_in_the_catalog():
  assert EVERYDAY <= {method.name for method in METHODS}


def _case(method):
  marks = [] if method.name in EVERYDAY else [pytest.mark.slow]
  return pytest.param(method, id=method.name, marks=marks)


def _num_tasks(method):
  return max(NUM_TASKS, method.min_tasks)


def _params(num_tasks):
  """A shared trunk and one linear head per task (the rows of ``heads``)."""
  trunk_key, heads_key = jax.random.split(jax.random.key(0))
  return {'trunk': 0.5 * jax.random.normal(trunk_key, (3, 5)),
          'heads': 0.5 * jax.random.normal(heads_key, (num_tasks, 5))}


def _batches(num_tasks):
  """``NUM_STEPS`` batches ``(x [B, 3], targets [T, B])``, one per step."""
  x = jax.random.normal(jax.random.key(1), (NUM_STEPS, BATCH, 3))
  # Tasks of different scales that pull the trunk different ways.
  mix = jax.random.normal(jax.random.key(2), (num_tasks, 3))
  scales = jnp.arange(1.0, num_tasks + 1.0)[:, None]
  return x, scales * jnp.sin(jnp.einsum('tc,sbc->stb', mix, x))


def _task_losses(params, x, targets):
  hidden = jnp.tanh(x @ params['trunk'])  # [B, 5]
  outputs = params['heads'] @ hidden.T  # [T, B]
  return jnp.mean((outputs - targets) ** 2, axis=1)


def _optimizer(method, num_tasks):
  balancer = method.make(num_tasks)
  if method.replaces_optimizer:
    return balancer
  return optax.chain(balancer, optax.adam(1e-2))


@pytest.mark.parametrize('method', [_case(method) for method in METHODS])
def test_resumed_training_is_bit_identical(method, tmp_path: pathlib.Path):
  num_tasks = _num_tasks(method)
  tx = _optimizer(method, num_tasks)
  xs, targets = _batches(num_tasks)
  initial = _params(num_tasks)

  def step(state, x, target):
    params, opt_state = state['params'], state['opt_state']
    losses, task_grads = mtl.value_and_task_grads(_task_losses)(
        params, x, target)
    updates, opt_state = tx.update(task_grads, opt_state, params,
                                   task_losses=losses)
    return {'params': optax.apply_updates(params, updates),
            'opt_state': opt_state}

  # Compiled ahead of time, once: both runs execute the same program, and a
  # restored state of another structure, shape or dtype raises instead of
  # being compiled anew.
  compiled = jax.jit(step).lower(
      {'params': initial, 'opt_state': tx.init(initial)}, xs[0],
      targets[0]).compile()

  def train(directory, num_steps):
    """``(state, first step)``: trains up to ``num_steps``, resuming from
    the latest checkpoint in ``directory`` (as the guide's ``train``)."""
    # A fresh optimizer and state, as after a restart: trained from
    # scratch, or the restore target that fixes the type of every leaf.
    fresh = _optimizer(method, num_tasks)
    state = {'params': initial, 'opt_state': fresh.init(initial)}
    options = ocp.CheckpointManagerOptions(save_interval_steps=SAVE_EVERY)
    with ocp.CheckpointManager(directory, options=options) as manager:
      start = manager.latest_step()
      if start is None:
        start = 0
      else:
        state = manager.restore(start, args=ocp.args.StandardRestore(state))
      for index in range(start, num_steps):
        state = compiled(state, xs[index], targets[index])
        manager.save(index + 1, args=ocp.args.StandardSave(state))
    return state, start

  uninterrupted, _ = train(tmp_path / 'uninterrupted', NUM_STEPS)
  train(tmp_path / 'resumed', STOP_AT)  # a job stopped after STOP_AT steps
  resumed, start = train(tmp_path / 'resumed', NUM_STEPS)  # and restarted
  assert start == RESUME_FROM  # the last checkpoint before the stop

  assert jax.tree.structure(resumed) == jax.tree.structure(uninterrupted)
  for got, want in zip(jax.tree.leaves(resumed),
                       jax.tree.leaves(uninterrupted)):
    assert got.dtype == want.dtype
    if jnp.issubdtype(want.dtype, jax.dtypes.prng_key):
      got, want = jax.random.key_data(got), jax.random.key_data(want)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # Training moved the parameters, so the comparison above is not vacuous.
  assert not np.array_equal(np.asarray(resumed['params']['trunk']),
                            np.asarray(initial['trunk']))
