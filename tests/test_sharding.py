"""Every balancer on a device mesh gives the one-device result.

conftest.py gives the session 8 simulated CPU devices. Each method runs one
training step (per-task gradients from ``value_and_task_grads`` inside jit,
then the balancer's update) in three layouts:

* ``data``: parameters replicated, the batch sharded over ``'data'``;
* ``fsdp``: parameters, hence every task-gradient leaf along its parameter
  dimension, sharded over ``'model'``, the batch over ``'data'``;
* ``task``: the stacked task gradients sharded along their task axis.

Every registered method (once per method, not per option, except GradVac's
per-leaf grouping, which works on the sharded leaves) runs in the ``fsdp``
layout, and those with task-axis code of their own (``EXPLICIT_CASES``) in
the ``task`` layout, on meshes with Explicit axes, the default of
``jax.make_mesh``: shardings are part of the types, so a method that mixes
them wrongly fails at trace time. In the ``data`` layout every task-gradient
leaf reaches the balancer replicated, as on one device; a few methods of
different kinds run there. On Auto axes the partitioner chooses the layout
and cannot change the values, only the communication, so a Gramian
weighting stands for every method there, and the HLO test below checks the
communication of the FSDP step on both kinds of mesh: the Gramian is an
all-reduce of ``T x T`` partial sums and no ``T x P`` array is gathered.

Each method compiles one unsharded reference step and one program per
layout, and runs each once.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import mtl_optax as mtl
from mtl_optax.catalog import METHODS
from mtl_optax.catalog import is_option

NUM_TASKS = 4  # No model dimension is 4, so a gathered [T, ...] is visible.
BATCH, IN, HIDDEN = 16, 8, 16
LAYOUTS = ('data', 'fsdp', 'task')
# The data layout: a Gramian method, a transformation with a random key and a
# chain with state of its own.
DATA_LAYOUT_METHODS = ('mgda', 'graddrop', 'db_mtl')
AXIS_TYPES = {'explicit': AxisType.Explicit, 'auto': AxisType.Auto}
TASK_SPECIFIC = {'trunk': {'w': False, 'b': False}, 'heads': True}


def _params():
  w_key, head_key = jax.random.split(jax.random.key(0))
  return {'trunk': {'w': jax.random.normal(w_key, (IN, HIDDEN)) / 3.0,
                    'b': jnp.linspace(-0.5, 0.5, HIDDEN)},
          'heads': jax.random.normal(head_key, (HIDDEN, NUM_TASKS)) / 4.0}


def _batch():
  x_key, y_key = jax.random.split(jax.random.key(1))
  return (jax.random.normal(x_key, (BATCH, IN)),
          jax.random.normal(y_key, (BATCH, NUM_TASKS)))


def _mesh(layout, axis_type):
  shape, names = {'data': ((8,), ('data',)),
                  'fsdp': ((2, 4), ('data', 'model')),
                  'task': ((4, 2), ('task', 'model'))}[layout]
  return jax.make_mesh(shape, names, axis_types=(axis_type,) * len(names))


def _param_specs(layout):
  """FSDP shards each parameter along one dimension of size HIDDEN."""
  if layout != 'fsdp':
    return jax.tree.map(lambda _: P(), _params())
  return {'trunk': {'w': P(None, 'model'), 'b': P('model')},
          'heads': P('model', None)}


def _gather(tree, axis_type):
  """What an FSDP forward does first: all-gather the parameters.

  On an Explicit mesh a matmul over a sharded contraction dimension is a type
  error, so the model gathers its weights, as FSDP does, and the backward pass
  scatters the gradients back to the parameters' sharding. On an Auto mesh
  the partitioner makes that choice itself.
  """
  if axis_type == AxisType.Explicit:
    return jax.tree.map(lambda leaf: jax.sharding.reshard(
        leaf, NamedSharding(jax.typeof(leaf).sharding.mesh, P())), tree)
  return tree


def _task_losses_fn(axis_type):

  def task_losses(params, x, y):
    params = _gather(params, axis_type)
    hidden = jnp.tanh(x @ params['trunk']['w'] + params['trunk']['b'])
    return jnp.mean((hidden @ params['heads'] - y) ** 2, axis=0)

  return task_losses


def _step(tx, axis_type):
  """One training step: task gradients inside jit, then the balancer."""
  task_grads_fn = mtl.value_and_task_grads(_task_losses_fn(axis_type))

  def step(params, state, x, y):
    task_losses, task_grads = task_grads_fn(params, x, y)
    updates, state = tx.update(task_grads, state, params,
                               task_losses=task_losses)
    return task_losses, updates, state

  return jax.jit(step)


def _gram_probe():
  """A Gramian weighting (w = row sums of G), so the update needs G."""

  def weigh(stats, state):
    return jnp.sum(stats.gram, axis=1), state

  return mtl.balancer(NUM_TASKS, weigh, name='gram_probe',
                      task_specific=TASK_SPECIFIC)


def _make(method_name):
  if method_name == 'gram_probe':
    return _gram_probe()
  method = next(m for m in METHODS if m.name == method_name)
  return method.make(NUM_TASKS, task_specific=TASK_SPECIFIC)


@functools.cache
def _task_losses_and_grads():
  x, y = _batch()
  task_grads_fn = mtl.value_and_task_grads(_task_losses_fn(None))
  return jax.jit(task_grads_fn)(_params(), x, y)


@functools.cache
def _single_device(method_name):
  """The reference: ``(task_losses, updates, state)`` of an unsharded step."""
  tx = _make(method_name)
  params = _params()
  return _step(tx, None)(params, tx.init(params), *_batch())


def _sharded(method_name, layout, axis_type):
  """``(task_losses, updates, state)`` of the step on a mesh."""
  mesh = _mesh(layout, axis_type)
  tx = _make(method_name)
  params = jax.tree.map(
      lambda leaf, spec: jax.device_put(leaf, NamedSharding(mesh, spec)),
      _params(), _param_specs(layout))
  # Eagerly, as a user would: state leaves shaped like the parameters
  # (DB-MTL's T x P EMA) inherit their sharding.
  state = tx.init(params)
  if layout == 'task':
    # The same task gradients as the reference step computes, T-sharded.
    task_losses, task_grads = _task_losses_and_grads()
    task_grads = jax.device_put(task_grads, NamedSharding(mesh, P('task')))
    task_losses = jax.device_put(task_losses, NamedSharding(mesh, P()))
    return (task_losses,) + jax.jit(tx.update)(
        task_grads, state, params, task_losses=task_losses)
  batch = NamedSharding(mesh, P('data'))
  x, y = (jax.device_put(a, batch) for a in _batch())
  return _step(tx, axis_type)(params, state, x, y)


def _assert_tree_close(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    if jnp.issubdtype(want.dtype, jax.dtypes.prng_key):
      got, want = jax.random.key_data(got), jax.random.key_data(want)
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    if np.issubdtype(want.dtype, np.floating):
      # Devices sum partial results in another order: float32 rounding of
      # the largest entry (~1e-7 relative) is the absolute floor.
      atol = 1e-6 * float(np.max(np.abs(want), initial=0.0))
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol)
    else:
      np.testing.assert_array_equal(got, want)


def _assert_matches_one_device(method_name, layout, axis_type):
  actual = _sharded(method_name, layout, axis_type)
  expected = _single_device(method_name)
  # Guards against a vacuous comparison: the update is not all zeros.
  assert any(np.any(np.asarray(leaf) != 0)
             for leaf in jax.tree.leaves(expected[1]))
  _assert_tree_close(actual, expected)


_BY_NAME = {m.name: m for m in METHODS}
EXPLICIT_METHODS = [m.name for m in METHODS
                    if not is_option(m) or m.name == 'gradvac.leaf']


def _own_task_axis_code(method_name: str) -> bool:
  """Whether the method does more over the task axis than the balancer.

  A plain weighting's update is the balancer's: the Gramian of the shared
  leaves, T weights, one weighted sum; only its T x T arithmetic differs,
  which no layout touches. The rest read the sharded task axis in code of
  their own: per-coordinate transformations, T x P states, per-leaf or
  cross-batch Gramians, head scaling.
  """
  factory = _BY_NAME[method_name].factory.__name__
  return (not hasattr(mtl.weightings, factory)
          or factory in ('gradvac', 'sdmgrad', 'modo', 'imtl'))


# Every method on the FSDP layout; on the task layout those with task-axis
# code of their own (above) and three plain weightings, as the balancer's
# representatives: one loss-free mean, a min-norm and a dual-cone solver.
EXPLICIT_CASES = [(name, 'fsdp') for name in EXPLICIT_METHODS] + [
    (name, 'task') for name in EXPLICIT_METHODS
    if _own_task_axis_code(name)
    or name in ('equal_weighting', 'mgda', 'upgrad')]


@pytest.mark.slow
@pytest.mark.parametrize('method, layout', EXPLICIT_CASES)
def test_explicit_mesh_matches_one_device(method, layout):
  _assert_matches_one_device(method, layout, AxisType.Explicit)


@pytest.mark.slow
@pytest.mark.parametrize('method', DATA_LAYOUT_METHODS)
def test_explicit_data_parallel_mesh_matches_one_device(method):
  _assert_matches_one_device(method, 'data', AxisType.Explicit)


@pytest.mark.parametrize('layout', LAYOUTS)
def test_auto_mesh_matches_one_device(layout):
  _assert_matches_one_device('gram_probe', layout, AxisType.Auto)


# ---------------------------------------------------------------------------
# The compiled FSDP program: a T x T all-reduce, never a T x P all-gather.

_COLLECTIVE = re.compile(
    r'=\s*(?P<shapes>\(?[^=]*?\)?)\s+(?P<op>all-gather|all-reduce)(?:-start)?\(')
_SHAPE = re.compile(r'[a-z]+\d*\[([\d,]*)\]')


def _collectives(hlo_text, op):
  """The result shapes of every ``op`` instruction in compiled HLO text."""
  shapes = []
  for match in _COLLECTIVE.finditer(hlo_text):
    if match.group('op') == op:
      shapes += [tuple(int(d) for d in dims.split(',') if d)
                 for dims in _SHAPE.findall(match.group('shapes'))]
  return shapes


@pytest.mark.parametrize('axis_type', AXIS_TYPES.keys())
def test_fsdp_gramian_is_a_task_by_task_all_reduce(axis_type):
  axis_type = AXIS_TYPES[axis_type]
  mesh = _mesh('fsdp', axis_type)
  tx = _gram_probe()
  params = jax.tree.map(
      lambda leaf, spec: jax.device_put(leaf, NamedSharding(mesh, spec)),
      _params(), _param_specs('fsdp'))
  state = tx.init(params)
  batch = NamedSharding(mesh, P('data'))
  x, y = (jax.device_put(a, batch) for a in _batch())
  step = _step(tx, axis_type)
  hlo = step.lower(params, state, x, y).compile().as_text()

  all_reduces = _collectives(hlo, 'all-reduce')
  gathered = _collectives(hlo, 'all-gather')
  assert (NUM_TASKS, NUM_TASKS) in all_reduces, all_reduces
  # Only parameters (FSDP's forward) may be gathered: nothing with a task
  # axis, and nothing as large as one task's trunk gradient times T.
  assert all(shape[:1] != (NUM_TASKS,) for shape in gathered), gathered
  assert all(np.prod(shape) < NUM_TASKS * IN * HIDDEN for shape in gathered), (
      gathered)



# ---------------------------------------------------------------------------
# A T x P state takes the parameters' layout, under jax.set_mesh too.


@pytest.mark.parametrize('jit_init', (False, True))
@pytest.mark.parametrize('method',
                         ('gradient_ema', 'db_mtl', 'moco', 'excess_mtl'))
def test_stacked_state_is_sharded_like_the_parameters(method, jit_init):
  # Under jax.set_mesh, a state created replicated could not meet the
  # FSDP-sharded gradients in the update's `where` (a ShardingTypeError
  # before the T x P states were created with zeros_like).
  mesh = _mesh('fsdp', AxisType.Explicit)
  tx = getattr(mtl, method)(NUM_TASKS, task_specific=TASK_SPECIFIC)
  params = jax.tree.map(
      lambda leaf, spec: jax.device_put(leaf, NamedSharding(mesh, spec)),
      _params(), _param_specs('fsdp'))
  batch = NamedSharding(mesh, P('data'))
  x, y = (jax.device_put(a, batch) for a in _batch())
  with jax.set_mesh(mesh):
    state = (jax.jit(tx.init) if jit_init else tx.init)(params)
    # The T x P leaves: one per shared leaf, trunk 'b' then trunk 'w'.
    stacked = [leaf for leaf in jax.tree.leaves(state) if leaf.ndim >= 2]
    assert [leaf.sharding.spec for leaf in stacked] == [
        P(None, 'model'), P(None, None, 'model')]
    _, updates, state = _step(tx, AxisType.Explicit)(params, state, x, y)
  reference = _step(tx, None)
  _, expected_updates, expected_state = reference(
      _params(), tx.init(_params()), *_batch())
  _assert_tree_close(updates, expected_updates)
  _assert_tree_close(state, expected_state)
