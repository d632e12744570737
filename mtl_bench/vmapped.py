"""One compiled program trains many MultiDigits networks at once.

A *member* is one network with its own seed, learning rate and (for the
fixed-weight rows) task weights. ``jax.vmap`` runs every member of a group
through the same steps, so the seeds of a method, or the whole learning-rate
× weighting grid of a baseline, cost one compilation and one call per
chunk of steps (as ``mtl_bench/reproduce/xor_and.py`` does for its 50 runs).

Each step is the library's intended use: ``mtl.value_and_task_grads`` gives
the ``[T]`` losses and the per-task gradients in one forward pass, and the
balancer, chained before Adam (or, for a method that is the whole
optimizer, alone with the learning rate), gets ``task_losses``. The regime's settings
(training-set size, loss scales, trunk width) are arrays, not constants, so
one compiled program serves every regime.
"""

import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import mtl_optax as mtl

from mtl_bench import effective_weights
from mtl_bench import methods as methods_lib
from mtl_bench import model as model_lib
from mtl_bench import multidigits

NUM_TASKS = len(multidigits.TASKS)


class Members(NamedTuple):
  """What tells the networks of one group apart (leading axis: member)."""
  seed: np.ndarray  # shape=[M], int32
  lr: np.ndarray  # shape=[M], float32; Adam's learning rate
  weights: np.ndarray  # shape=[M, T], float32; only fixed_weighting reads it


class History(NamedTuple):
  """What a group's training produced (leading axis: member)."""
  losses: np.ndarray  # shape=[M, steps, T]; raw training losses
  state_weights: np.ndarray  # shape=[M, steps, T]; the balancer's state.weights
  effective_weights: np.ndarray  # shape=[M, steps, T]; least-squares weights
  eval_steps: np.ndarray  # shape=[E]; steps after which metrics were taken
  val_metrics: np.ndarray  # shape=[M, E, T]
  test_metrics: np.ndarray  # shape=[M, E, T]
  compile_seconds: float
  train_seconds: float


def regime_arrays(regime: multidigits.Regime, hidden: int) -> dict:
  """The regime's settings as arrays (one compiled program for every regime)."""
  mask = np.zeros(hidden, np.float32)
  mask[:min(regime.width, hidden)] = 1.0
  return {'num_train': np.int32(regime.num_train),
          'loss_scales': np.asarray(regime.loss_scales, np.float32),
          'trunk_mask': mask}


def _state_weights(balancer_state) -> jax.Array:
  """The method's own ``[T]`` weights (``mtl.last_weights``), NaN if none."""
  try:
    return mtl.last_weights(balancer_state).astype(jnp.float32)
  except ValueError:  # a method that reports no task weights
    return jnp.full([NUM_TASKS], jnp.nan, jnp.float32)


class Program(NamedTuple):
  init: Callable[..., Any]
  chunk: Callable[..., Any]


@functools.lru_cache(maxsize=None)
def program(spec: str, hidden: int, batch_size: int,
            chunk_steps: int) -> Program:
  """The jitted ``init`` and ``chunk`` functions of method ``spec``.

  Cached, so that every regime and every group of the same method and
  shapes reuses one compilation.
  """
  graphdef, _ = nnx.split(model_lib.MultiDigitsNet(hidden=hidden,
                                                   rngs=nnx.Rngs(0)),
                          nnx.Param)

  # MTAdam and AdaTask are the whole optimizer: they take the learning
  # rate, and Adam is not chained after them.
  whole = methods_lib.replaces_optimizer(spec)

  def optimizer(seed, lr, weights):
    balancer = methods_lib.make(spec, NUM_TASKS, model_lib.task_specific,
                                key=seed, fixed_weights=weights,
                                learning_rate=lr)
    return optax.chain(
        effective_weights.with_effective_weights(balancer, NUM_TASKS,
                                                 model_lib.task_specific),
        *(() if whole else (optax.adam(lr),)))

  def init_one(params, seed, lr, weights):
    return optimizer(seed, lr, weights).init(params)

  def forward(params, images, trunk_mask):
    return nnx.merge(graphdef, params)(images, trunk_mask=trunk_mask)

  def chunk_one(params, opt_state, seed, lr, weights, step, train, val,
                test, regime):
    tx = optimizer(seed, lr, weights)

    def losses_fn(params, batch):
      outputs = forward(params, batch[0], regime['trunk_mask'])
      return regime['loss_scales'] * model_lib.task_losses(outputs, batch)

    grads_fn = mtl.value_and_task_grads(losses_fn)
    data_key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)

    def one_step(carry, offset):
      params, opt_state = carry
      key = jax.random.fold_in(data_key, step + offset)
      indices = jax.random.randint(key, (batch_size,), 0, regime['num_train'])
      batch = jax.tree.map(lambda array: array[indices], train)
      task_losses, task_grads = grads_fn(params, batch)
      updates, opt_state = tx.update(task_grads, opt_state, params,
                                     task_losses=task_losses)
      params = optax.apply_updates(params, updates)
      wrapper = opt_state[0]
      return (params, opt_state), (task_losses / regime['loss_scales'],
                                   _state_weights(wrapper.inner),
                                   wrapper.weights)

    (params, opt_state), records = jax.lax.scan(
        one_step, (params, opt_state), jnp.arange(chunk_steps))
    metrics = [model_lib.task_metrics(forward(params, split[0],
                                              regime['trunk_mask']), split)
               for split in (val, test)]
    return params, opt_state, records, metrics

  members = (0, 0, 0)
  init = jax.jit(jax.vmap(init_one, in_axes=(0,) + members))
  chunk = jax.jit(jax.vmap(
      chunk_one, in_axes=(0, 0) + members + (None, None, None, None, None)))
  return Program(init, chunk)


def init_params(seeds: np.ndarray, hidden: int):
  """Stacked ``nnx.Param`` states, one network per seed."""
  states = [nnx.split(model_lib.MultiDigitsNet(hidden=hidden,
                                               rngs=nnx.Rngs(int(seed))),
                      nnx.Param)[1] for seed in seeds]
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def chunk_steps_for(steps: int, eval_every: int) -> int:
  """The largest divisor of ``steps`` up to ``eval_every``: one compiled shape."""
  return max(size for size in range(1, min(eval_every, steps) + 1)
             if steps % size == 0)


def train_group(spec: str, members: Members, data: multidigits.MultiDigits,
                regime: multidigits.Regime, *, steps: int, batch_size: int,
                hidden: int, eval_every: int, progress=None) -> History:
  """Trains every member of a group with method ``spec``; returns its history.

  ``progress``, if given, is called as ``progress('compiling')``, then
  ``progress('compiled', seconds)`` and ``progress(step, losses [T])`` after
  every chunk (``losses``: the last step's raw losses, mean over members).
  """
  size = chunk_steps_for(steps, eval_every)
  fns = program(spec, hidden, batch_size, size)
  arrays = jax.tree.map(jnp.asarray, regime_arrays(regime, hidden))
  train, val, test = (tuple(jnp.asarray(array) for array in
                            multidigits.as_arrays(split)) for split in data)
  member_args = (jnp.asarray(members.seed, jnp.int32),
                 jnp.asarray(members.lr, jnp.float32),
                 jnp.asarray(members.weights, jnp.float32))
  params = init_params(members.seed, hidden)
  report = progress or (lambda *args: None)
  report('compiling')
  start = time.perf_counter()
  opt_state = fns.init(params, *member_args)
  args = (params, opt_state) + member_args + (jnp.int32(0), train, val, test,
                                              arrays)
  compiled = fns.chunk.lower(*args).compile()
  compile_seconds = time.perf_counter() - start
  report('compiled', compile_seconds)
  start = time.perf_counter()
  records, vals, tests = [], [], []
  for done in range(0, steps, size):
    params, opt_state, record, (val_metrics, test_metrics) = compiled(
        params, opt_state, *member_args, jnp.int32(done), train, val, test,
        arrays)
    records.append(record)
    vals.append(val_metrics)
    tests.append(test_metrics)
    report(done + size, np.mean(np.asarray(record[0][:, -1]), axis=0))
  train_seconds = time.perf_counter() - start
  losses, state_weights, eff_weights = (
      np.concatenate([np.asarray(record[i], np.float64) for record in records],
                     axis=1) for i in range(3))
  return History(
      losses=losses, state_weights=state_weights,
      effective_weights=eff_weights,
      eval_steps=np.arange(size, steps + 1, size),
      val_metrics=np.stack([np.asarray(v, np.float64) for v in vals], axis=1),
      test_metrics=np.stack([np.asarray(t, np.float64) for t in tests],
                            axis=1),
      compile_seconds=compile_seconds, train_seconds=train_seconds)


def initial_losses(data: multidigits.MultiDigits, regime: multidigits.Regime,
                   hidden: int, count: int = 1024) -> np.ndarray:
  """``[T]`` losses the balancer sees at initialisation (seed 0, scaled).

  On the first ``count`` training images of the regime; the fixed-weight
  grid's 1/L₀ weighting is built from them.
  """
  arrays = regime_arrays(regime, hidden)
  count = min(count, regime.num_train)
  batch = tuple(jnp.asarray(array[:count])
                for array in multidigits.as_arrays(data.train))
  network = model_lib.MultiDigitsNet(hidden=hidden, rngs=nnx.Rngs(0))
  outputs = network(batch[0], trunk_mask=jnp.asarray(arrays['trunk_mask']))
  losses = model_lib.task_losses(outputs, batch) * arrays['loss_scales']
  return np.asarray(losses, np.float64)
