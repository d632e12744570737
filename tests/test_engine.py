"""The Gramian engine against the stacked path.

``value_and_gramian`` must give the Gramian of the stacked per-task gradients
(``mtl.gramian`` over ``value_and_task_grads``) and ``value_and_balanced_grad``
the update of ``mtl.balancer(T, weighting)`` on them, without materialising
the gradients (checked from the compiled memory analysis, never a timing).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_optax as mtl
from mtl_optax.catalog import METHODS
from mtl_optax.catalog import is_option

NUM_TASKS = 4


# ---------------------------------------------------------------------------
# Models: an MLP with task heads, a small conv net, a Flax NNX model.


def _mlp(num_tasks=NUM_TASKS, width=16, inputs=5, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  params = {
      'trunk': {'w1': jax.random.normal(keys[0], (inputs, width)) / 2,
                'b1': jnp.linspace(-0.3, 0.3, width),
                'w2': jax.random.normal(keys[1], (width, width)) / 4},
      'heads': jax.random.normal(keys[2], (width, num_tasks)) / 4,
  }
  x = jax.random.normal(keys[3], (12, inputs))
  y = jnp.sin(jnp.arange(12 * num_tasks, dtype=jnp.float32)).reshape(
      12, num_tasks)

  def task_losses(params, x, y):
    hidden = jnp.tanh(x @ params['trunk']['w1'] + params['trunk']['b1'])
    hidden = jnp.tanh(hidden @ params['trunk']['w2'])
    # Different scales per task, as MTL losses have.
    scales = 10.0 ** jnp.linspace(-1, 1, y.shape[1])
    return scales * jnp.mean((hidden @ params['heads'] - y) ** 2, axis=0)

  return params, task_losses, (x, y)


def _conv_net():
  keys = jax.random.split(jax.random.key(1), 3)
  params = {'kernel': jax.random.normal(keys[0], (3, 3, 1, 4)) / 3,
            'dense': jax.random.normal(keys[1], (4 * 6 * 6, 3)) / 10}
  images = jax.random.normal(keys[2], (5, 6, 6, 1))

  def task_losses(params, images):
    features = jax.lax.conv_general_dilated(
        images, params['kernel'], (1, 1), 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    outputs = jax.nn.relu(features).reshape(5, -1) @ params['dense']
    return jnp.stack([jnp.mean(outputs[:, 0] ** 2),
                      jnp.mean(jnp.abs(outputs[:, 1] - 1.0)),
                      jnp.mean(jax.nn.softplus(outputs[:, 2]))])

  return params, task_losses, (images,)


def _stacked_gramian(task_losses, params, args, task_specific=None):
  _, task_grads = mtl.value_and_task_grads(task_losses)(params, *args)
  flags = mtl._src.base.task_specific_flags(task_specific, params)
  shared, _ = mtl._src.base.split_leaves(flags, task_grads)
  gram, scale = mtl.gramian(shared)
  return np.asarray(gram * scale**2)


@pytest.mark.parametrize('chunk_size', [None, 1, 3])
def test_gramian_equals_stacked_on_an_mlp(chunk_size):
  params, task_losses, args = _mlp()
  task_specific = {'trunk': False, 'heads': True}
  losses, gram = jax.jit(mtl.value_and_gramian(
      task_losses, chunk_size=chunk_size, task_specific=task_specific))(
          params, *args)
  expected = _stacked_gramian(task_losses, params, args, task_specific)
  np.testing.assert_allclose(gram, expected, rtol=1e-5,
                             atol=1e-6 * np.abs(expected).max())
  np.testing.assert_allclose(losses, task_losses(params, *args), rtol=1e-6)


@pytest.mark.slow
def test_gramian_equals_stacked_on_a_conv_net():
  params, task_losses, args = _conv_net()
  _, gram = jax.jit(mtl.value_and_gramian(task_losses, chunk_size=2))(
      params, *args)
  expected = _stacked_gramian(task_losses, params, args)
  np.testing.assert_allclose(gram, expected, rtol=1e-5,
                             atol=1e-6 * np.abs(expected).max())


@pytest.mark.slow
def test_gramian_equals_stacked_on_a_flax_nnx_model_with_heads():
  from flax import nnx

  class Model(nnx.Module):

    def __init__(self, rngs):
      self.trunk = nnx.Linear(4, 8, rngs=rngs)
      self.heads = nnx.List([nnx.Linear(8, 1, rngs=rngs) for _ in range(3)])

    def __call__(self, x):
      hidden = nnx.relu(self.trunk(x))
      return [head(hidden)[:, 0] for head in self.heads]

  model = Model(nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  x = jax.random.normal(jax.random.key(2), (6, 4))
  targets = jnp.arange(18, dtype=jnp.float32).reshape(3, 6) / 10

  def task_losses(params):
    outputs = nnx.merge(graphdef, params)(x)
    return jnp.stack([jnp.mean((o - t) ** 2)
                      for o, t in zip(outputs, targets)])

  is_head = lambda tree: jax.tree_util.tree_map_with_path(
      lambda path, _: 'heads' in jax.tree_util.keystr(path), tree)
  _, gram = nnx.jit(mtl.value_and_gramian(
      task_losses, task_specific=is_head))(params)
  expected = _stacked_gramian(task_losses, params, (), is_head)
  np.testing.assert_allclose(gram, expected, rtol=1e-5,
                             atol=1e-6 * np.abs(expected).max())


@pytest.mark.slow
def test_gramian_survives_huge_and_tiny_gradients():
  """The rescaled columns keep G finite where its entries are ~1e±40."""
  params, task_losses, args = _mlp()
  for factor in (1e20, 1e-20):
    scaled = lambda p, *a, f=factor: f * task_losses(p, *a)
    _, grads, _ = jax.jit(mtl.value_and_balanced_grad(
        scaled, mtl.weightings.mgda()))(params, optax.EmptyState(), *args)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(grads))
  # The weights, which only see G up to a factor, match the unscaled ones.
  weighting = mtl.weightings.mgda()
  _, reference, _ = mtl.value_and_balanced_grad(task_losses, weighting)(
      params, optax.EmptyState(), *args)
  _, tiny, _ = mtl.value_and_balanced_grad(
      lambda p, *a: 1e-20 * task_losses(p, *a), weighting)(
          params, optax.EmptyState(), *args)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a * 1e-20, b, rtol=1e-4, atol=1e-30), reference, tiny)


# ---------------------------------------------------------------------------
# The update equals the stacked balancer's, for every eligible method.


ELIGIBLE = [pytest.param(m, id=m.name) for m in METHODS
            if m.weighting is not None and not is_option(m)]
INELIGIBLE = [pytest.param(m, id=m.name) for m in METHODS
              if m.weighting is None]


@functools.cache
def _stacked_step(method_name, task_specific_heads=True):
  method = next(m for m in METHODS if m.name == method_name)
  params, task_losses, args = _mlp()
  task_specific = {'trunk': False, 'heads': True}
  tx = method.make(NUM_TASKS, task_specific=task_specific)

  @jax.jit
  def step(params, state):
    losses, task_grads = mtl.value_and_task_grads(task_losses)(params, *args)
    return tx.update(task_grads, state, params, task_losses=losses)

  return step, tx.init(params)


def _compare(method, chunk_size, num_steps=2):
  params, task_losses, args = _mlp()
  task_specific = {'trunk': False, 'heads': True}
  step, stacked_state = _stacked_step(method.name)
  weighting = method.weighting()
  engine = jax.jit(mtl.value_and_balanced_grad(
      task_losses, weighting, chunk_size=chunk_size,
      task_specific=task_specific))
  state = weighting.init(NUM_TASKS)
  for _ in range(num_steps):
    expected, stacked_state = step(params, stacked_state)
    _, grads, state = engine(params, state, *args)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=2e-4, atol=2e-5 * max(1.0, np.abs(b).max())),
                 grads, expected)
    np.testing.assert_array_equal(
        jax.tree.structure(state), jax.tree.structure(
            stacked_state.weighting_state))
    params = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)


# One weighting of each kind the engine treats differently: Gramian only,
# Gramian and losses with state, losses only (one reverse pass), weights of
# its own for task-specific leaves (IMTL-L's factors), a random key in the
# state.
REPRESENTATIVE = [pytest.param(m, id=m.name) for m in METHODS
                  if m.name in ('mgda', 'fairgrad', 'uncertainty_weighting.kendall',
                                'imtl.loss', 'rlw')]


@pytest.mark.parametrize(
    'chunk_size', [pytest.param(None, marks=pytest.mark.slow), 3])
@pytest.mark.parametrize('method', REPRESENTATIVE)
def test_engine_update_equals_stacked_update(method, chunk_size):
  _compare(method, chunk_size=chunk_size)


@pytest.mark.slow
@pytest.mark.parametrize('method', ELIGIBLE)
def test_engine_update_equals_stacked_update_for_every_method(method):
  # Chunk size 1: the engine's memory-saving setting, one task at a time.
  _compare(method, chunk_size=1)


@pytest.mark.parametrize('method', INELIGIBLE)
def test_per_coordinate_methods_raise_naming_the_stacked_path(method):
  _, task_losses, _ = _mlp()
  with pytest.raises(ValueError, match='value_and_task_grads'):
    mtl.value_and_balanced_grad(task_losses, method.make(NUM_TASKS))


def test_loss_level_weighting_uses_one_backward_pass():
  """For a loss-level weighting the engine differentiates Σ w_t L_t once."""
  params, task_losses, args = _mlp()
  weighting = mtl.weightings.uncertainty_weighting(learning_rate=1e-2)
  state = weighting.init(NUM_TASKS)
  losses, grads, new_state = mtl.value_and_balanced_grad(
      task_losses, weighting)(params, state, *args)
  weights, expected_state = mtl.weigh_losses(weighting, losses, state)
  expected = jax.grad(lambda p: jnp.dot(weights, task_losses(p, *args)))(
      params)
  # The same float32 sums, ordered by XLA as it fuses each program (differently
  # since jax 0.12): entries move by about one float32 ulp (1.2e-7 relative)
  # of the leaf's largest entry (1.5 measured on jax 0.12.1), relatively more
  # where a batch sum cancels. atol is 8 such ulps; a wrong weight moves
  # entries by far more.
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(
          a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max()),
      grads, expected)
  jax.tree.map(np.testing.assert_array_equal, new_state, expected_state)


def test_non_finite_loss_keeps_the_state_and_poisons_the_gradient():
  params, task_losses, args = _mlp()
  weighting = mtl.weightings.uncertainty_weighting(learning_rate=1e-2)
  state = weighting.init(NUM_TASKS)
  bad = lambda p, *a: task_losses(p, *a).at[1].set(jnp.nan)
  for w in (weighting, mtl.weightings.mgda()):
    s = w.init(NUM_TASKS)
    _, grads, new_state = jax.jit(mtl.value_and_balanced_grad(bad, w))(
        params, s, *args)
    assert all(np.isnan(leaf).all() for leaf in jax.tree.leaves(grads))
    jax.tree.map(np.testing.assert_array_equal, new_state, s)
  del state


def test_has_aux_returns_the_aux_value():
  params, task_losses, args = _mlp()
  with_aux = lambda p, *a: (task_losses(p, *a), {'note': jnp.ones(2)})
  (losses, aux), _ = mtl.value_and_gramian(with_aux, has_aux=True)(
      params, *args)
  np.testing.assert_array_equal(aux['note'], jnp.ones(2))
  (losses2, aux2), _, _ = mtl.value_and_balanced_grad(
      with_aux, mtl.weightings.mgda(), has_aux=True)(
          params, optax.EmptyState(), *args)
  np.testing.assert_allclose(losses, losses2)


def test_bad_inputs_raise_one_line_errors():
  params, task_losses, args = _mlp()
  with pytest.raises(ValueError, match='chunk_size'):
    mtl.value_and_gramian(task_losses, chunk_size=0)
  with pytest.raises(ValueError, match='shape'):
    mtl.value_and_gramian(lambda p, *a: jnp.sum(task_losses(p, *a)))(
        params, *args)
  with pytest.raises(ValueError, match='task-specific'):
    mtl.value_and_gramian(task_losses, task_specific=True)(params, *args)


# ---------------------------------------------------------------------------
# Memory, from the compiled memory analysis.


def test_engine_memory_is_a_small_share_of_the_stacked_path():
  """At T = 32 the engine's temporaries are <= 1/8 of the stacked path's."""
  num_tasks, width = 32, 256
  params, task_losses, args = _mlp(num_tasks=num_tasks, width=width,
                                   inputs=256)
  weighting = mtl.weightings.upgrad()
  tx = mtl.balancer(num_tasks, weighting)

  def stacked(params, state, *args):
    losses, task_grads = mtl.value_and_task_grads(task_losses)(params, *args)
    return tx.update(task_grads, state, params, task_losses=losses)

  engine = mtl.value_and_balanced_grad(task_losses, weighting, chunk_size=1)

  def temp_bytes(fn, *inputs):
    compiled = jax.jit(fn).lower(*inputs).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  stacked_bytes = temp_bytes(stacked, params, tx.init(params), *args)
  engine_bytes = temp_bytes(engine, params, weighting.init(num_tasks), *args)
  num_params = sum(leaf.size for leaf in jax.tree.leaves(params))
  # The stacked path must hold the T x P gradients at least once.
  assert stacked_bytes >= num_tasks * num_params * 4
  assert engine_bytes <= stacked_bytes / 8, (engine_bytes, stacked_bytes)


# ---------------------------------------------------------------------------
# On a mesh.


def test_engine_on_an_fsdp_mesh_equals_one_device():
  from jax.sharding import NamedSharding, PartitionSpec as P
  if len(jax.devices()) < 8:
    pytest.fail('conftest.py should give the session 8 CPU devices')
  params, task_losses, args = _mlp(width=16)
  mesh = jax.make_mesh((2, 4), ('data', 'model'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  specs = {'trunk': {'w1': P(None, 'model'), 'b1': P('model'),
                     'w2': P('model', None)},
           'heads': P('model', None)}
  sharded_params = jax.tree.map(
      lambda leaf, spec: jax.device_put(leaf, NamedSharding(mesh, spec)),
      params, specs)
  sharded_args = [jax.device_put(a, NamedSharding(mesh, P('data')))
                  for a in args]
  weighting = mtl.weightings.upgrad()
  fn = jax.jit(mtl.value_and_balanced_grad(
      task_losses, weighting, chunk_size=2,
      task_specific={'trunk': False, 'heads': True}))
  _, expected, _ = fn(params, weighting.init(NUM_TASKS), *args)
  _, grads, _ = fn(sharded_params, weighting.init(NUM_TASKS), *sharded_args)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-7),
               grads, expected)
  hlo = fn.lower(sharded_params, weighting.init(NUM_TASKS),
                 *sharded_args).compile().as_text()
  assert 'all-reduce' in hlo


def test_engine_scales_task_specific_leaves_like_the_balancer():
  """IMTL-L's head scaling (a weighting's specific_weights) on both paths."""
  params, task_losses, args = _mlp()
  task_specific = {'trunk': False, 'heads': True}
  weighting = mtl.weightings.imtl(mode='hybrid', scale_task_specific=True)
  tx = mtl.balancer(NUM_TASKS, weighting, task_specific=task_specific)
  losses, task_grads = mtl.value_and_task_grads(task_losses)(params, *args)
  state = tx.init(params)
  # One step moves the log-scales away from 0, so the factors are not all 1.
  _, state = tx.update(task_grads, state, params, task_losses=losses)
  expected, _ = tx.update(task_grads, state, params, task_losses=losses)
  _, grads, _ = mtl.value_and_balanced_grad(
      task_losses, weighting, task_specific=task_specific)(
          params, state.weighting_state, *args)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6),
               grads, expected)
