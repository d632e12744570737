"""The foundation: value_and_task_grads, the balancer contract, loss-level methods."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mtl_optax as mtl
from mtl_optax._src import column_blocks

# J = [[-4, 1, 1], [6, 1, 1]] split over two leaves; G = [[18, -22], [-22, 38]].
WORKED = {'a': jnp.array([[-4.0, 1.0], [6.0, 1.0]]), 'b': jnp.array([[1.0], [1.0]])}


class ThreeHeads(nnx.Module):
  """A shared trunk and three heads: the shape of every model in this library."""

  def __init__(self, rngs):
    self.trunk = nnx.Linear(4, 8, rngs=rngs)
    self.heads = nnx.List([nnx.Linear(8, 2, rngs=rngs) for _ in range(3)])

  def __call__(self, x):
    hidden = jnp.tanh(self.trunk(x))
    return [head(hidden) for head in self.heads]


def _three_heads_problem():
  model = ThreeHeads(nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  x = jax.random.normal(jax.random.key(1), (16, 4))
  y = jax.random.normal(jax.random.key(2), (16, 2))

  def task_losses(params, x, y):
    outputs = nnx.merge(graphdef, params)(x)
    return jnp.stack([jnp.mean((out - (t + 1) * y) ** 2)
                      for t, out in enumerate(outputs)])

  return model, params, task_losses, x, y


def _is_head(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: 'heads' in jax.tree_util.keystr(path), params)


# ---------------------------------------------------------------------------
# value_and_task_grads


@pytest.mark.parametrize('chunk_size', [None] + [
    pytest.param(size, marks=pytest.mark.slow) for size in (1, 2, 3, 5)])
def test_task_grads_equal_separate_grads_on_nnx_model(chunk_size):
  _, params, task_losses, x, y = _three_heads_problem()
  fn = jax.jit(mtl.value_and_task_grads(task_losses, chunk_size=chunk_size))
  losses, task_grads = fn(params, x, y)
  np.testing.assert_allclose(losses, task_losses(params, x, y), rtol=1e-6)
  for t in range(3):
    expected = jax.grad(lambda p: task_losses(p, x, y)[t])(params)
    jax.tree.map(lambda g, e: np.testing.assert_allclose(
        g[t], e, rtol=1e-5, atol=1e-7), task_grads, expected)


def test_task_grads_has_aux():
  def fn(w, scale):
    losses = jnp.stack([jnp.sum(w ** 2), scale * jnp.sum(w)])
    return losses, {'total': jnp.sum(losses)}

  (losses, aux), grads = jax.jit(mtl.value_and_task_grads(fn, has_aux=True))(
      jnp.array([1.0, 2.0]), 3.0)
  np.testing.assert_allclose(losses, [5.0, 9.0])
  np.testing.assert_allclose(aux['total'], 14.0)
  # d/dw sum(w^2) = 2w; d/dw 3 sum(w) = 3.
  np.testing.assert_allclose(grads, [[2.0, 4.0], [3.0, 3.0]])


def test_task_grads_rejects_non_vector_losses_and_bad_chunk():
  with pytest.raises(ValueError, match='shape \\[T\\]'):
    mtl.value_and_task_grads(lambda w: jnp.sum(w))(jnp.ones(2))
  with pytest.raises(ValueError, match='chunk_size'):
    mtl.value_and_task_grads(lambda w: w, chunk_size=0)


# ---------------------------------------------------------------------------
# The core: Gramian and weighted sum.


def test_gramian_worked_example_and_weighted_sum():
  gram, scale = jax.jit(mtl.gramian)(WORKED)
  np.testing.assert_allclose(gram, [[18.0, -22.0], [-22.0, 38.0]])
  assert scale == 1.0
  update = jax.jit(mtl.weighted_sum)(jnp.array([0.6, 0.4]), WORKED)
  np.testing.assert_allclose(update['a'], [0.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(update['b'], [1.0], atol=1e-6)


@pytest.mark.parametrize('magnitude', [1e-20, 1e20])
def test_gramian_rescues_float32_over_and_underflow(magnitude):
  tree = jax.tree.map(lambda leaf: leaf * magnitude, WORKED)
  gram, scale = jax.jit(mtl.gramian)(tree)
  # scale is the power of two nearest the largest entry, 6 * magnitude.
  expected_scale = 2.0 ** round(math.log2(6 * magnitude))
  assert float(scale) == expected_scale
  true_gram = np.array([[18.0, -22.0], [-22.0, 38.0]]) * magnitude ** 2
  np.testing.assert_allclose(np.asarray(gram, np.float64) * expected_scale ** 2,
                             true_gram, rtol=1e-6)


def test_gramian_of_non_finite_gradients_is_flagged():
  tree = {'a': WORKED['a'].at[0, 0].set(jnp.inf), 'b': WORKED['b']}
  gram, scale = jax.jit(mtl.gramian)(tree)
  assert not (np.all(np.isfinite(gram)) and np.isfinite(scale))


# 512 columns of 1 + 2^-7 (exact in bfloat16), alone (one dot) or spread over
# 2^21 otherwise-zero columns: 8 MiB, a leaf summed in column blocks on CPU.
@pytest.mark.parametrize('width', [512, 2**21])
def test_gramian_accumulates_low_precision_in_float32(width):
  columns = jnp.arange(0, width, width // 512)
  grads = jnp.zeros((2, width), jnp.bfloat16).at[:, columns].set(1 + 2.0 ** -7)
  blocked = width > 512 and jax.default_backend() == 'cpu'
  assert (column_blocks.width(grads) is not None) == blocked
  gram, _ = jax.jit(mtl.gramian)(grads)
  assert gram.dtype == jnp.float32
  # Each product is (1 + 2^-7)^2 = 1 + 2^-6 + 2^-14: exact in float32, while
  # bfloat16's 8-bit significand rounds it to 1 + 2^-6. A sum of k <= 512 of
  # them is a multiple of 2^-14 below 2^10, which float32's 24 bits hold, so
  # float32 accumulation in any order (XLA's order changes between versions)
  # gives exactly 512 + 8 + 2^-5. bfloat16 products, a bfloat16 accumulator
  # (ulp 2 above 256) or a bfloat16 result each give 520 (simulated).
  np.testing.assert_array_equal(gram, np.full((2, 2), 520.03125))


# ---------------------------------------------------------------------------
# Loss-level methods: hand-derived values.


def _update(tx, grads, losses=None, state=None):
  state = tx.init(None) if state is None else state
  return jax.jit(tx.update)(grads, state, task_losses=losses)


def test_equal_and_fixed_weighting_values():
  updates, state = _update(mtl.equal_weighting(2), WORKED)
  np.testing.assert_allclose(updates['a'], [2.0, 2.0])  # [-4+6, 1+1]
  np.testing.assert_allclose(state.weights, [1.0, 1.0])
  updates, state = _update(mtl.equal_weighting(2, reduction='mean'), WORKED)
  np.testing.assert_allclose(updates['a'], [1.0, 1.0])
  updates, state = _update(mtl.fixed_weighting(2, [0.5, 2.0]), WORKED)
  np.testing.assert_allclose(updates['a'], [-2.0 + 12.0, 0.5 + 2.0])
  np.testing.assert_allclose(state.weights, [0.5, 2.0])


def test_logse_weights_are_one_over_twice_the_loss():
  losses = jnp.array([0.25, 4.0])
  updates, state = _update(mtl.logse(2), WORKED, losses)
  np.testing.assert_allclose(state.weights, [2.0, 0.125])  # 1 / (2 L_t), eq. 13
  np.testing.assert_allclose(updates['a'], [2.0 * -4 + 0.125 * 6, 2.125])


def test_logse_floors_non_positive_losses():
  updates, state = _update(mtl.logse(2, floor=1e-4), WORKED,
                           jnp.array([0.0, -3.0]))
  np.testing.assert_allclose(state.weights, [5000.0, 5000.0])  # 1 / (2 * 1e-4)
  assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))


def _liebel_fixed_point(loss):
  """Root of ½ e^{-s} L = sigmoid(s) by bisection (the left side falls, the right rises)."""
  low, high = -50.0, 50.0
  for _ in range(200):
    mid = 0.5 * (low + high)
    if 0.5 * math.exp(-mid) * loss > 1.0 / (1.0 + math.exp(-mid)):
      low = mid
    else:
      high = mid
  return 0.5 * (low + high)


@pytest.mark.parametrize('form', ['kendall', 'liebel', 'bentaieb'])
def test_uncertainty_converges_to_its_fixed_point(form):
  losses = jnp.array([0.2, 1.0, 5.0])
  tx = mtl.uncertainty_weighting(3, form=form, optimizer=optax.sgd(0.5))
  grads = jnp.eye(3)
  state = tx.init(None)

  def many_steps(state):
    def step(state, _):
      return tx.update(grads, state, task_losses=losses)[1], None
    return jax.lax.scan(step, state, None, length=400)[0]

  state = jax.jit(many_steps)(state)
  if form == 'liebel':
    expected = [_liebel_fixed_point(float(l)) for l in losses]
  else:  # ∂/∂s = c (1 − e^{-s} L) vanishes at s = log L.
    expected = np.log(np.asarray(losses))
  np.testing.assert_allclose(state.weighting_state.log_vars, expected,
                             atol=1e-4)
  half = 1.0 if form == 'bentaieb' else 0.5
  np.testing.assert_allclose(state.weights, half * np.exp(-np.asarray(
      state.weighting_state.log_vars)), rtol=1e-3)


def test_uncertainty_first_step_by_hand():
  # At s = 0 with SGD(lr): w = ½ (kendall), s' = -lr * ½ (1 - L).
  tx = mtl.uncertainty_weighting(2, optimizer=optax.sgd(0.1))
  updates, state = _update(tx, WORKED, jnp.array([3.0, 1.0]))
  np.testing.assert_allclose(state.weights, [0.5, 0.5])
  np.testing.assert_allclose(state.weighting_state.log_vars, [0.1, 0.0],
                             atol=1e-7)
  np.testing.assert_allclose(updates['a'], [1.0, 1.0])


def test_uncertainty_default_adam_approaches_fixed_point():
  tx = mtl.uncertainty_weighting(2, form='bentaieb', learning_rate=0.05)
  losses = jnp.array([0.5, 2.0])

  def run(state):
    step = lambda s, _: (tx.update(jnp.eye(2), s, task_losses=losses)[1], None)
    return jax.lax.scan(step, state, None, length=2000)[0]

  state = jax.jit(run)(tx.init(None))
  np.testing.assert_allclose(state.weighting_state.log_vars, np.log([0.5, 2.0]),
                             atol=2e-2)


@pytest.mark.parametrize('make', [
    lambda: mtl.equal_weighting(3),
    lambda: mtl.fixed_weighting(3, [0.2, 1.0, 3.0]),
    lambda: mtl.logse(3),
    lambda: mtl.uncertainty_weighting(3, form='liebel', init_log_vars=0.3),
])
def test_one_backward_path_gives_the_same_update(make):
  _, params, task_losses, x, y = _three_heads_problem()
  tx = make()
  state = tx.init(params)
  losses, task_grads = mtl.value_and_task_grads(task_losses)(params, x, y)
  expected_updates, expected_state = jax.jit(tx.update)(
      task_grads, state, params, task_losses=losses)

  def objective(params, state):
    losses = task_losses(params, x, y)
    weights, new_state = tx.weigh_losses(losses, state)
    return jnp.dot(weights, losses), new_state

  grads, new_state = jax.jit(jax.grad(objective, has_aux=True))(params, state)
  # Both sum the same terms in a different order: float32 round-off only.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               grads, expected_updates)
  # The same float32 expressions in another order: a few ulps apart.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               new_state, expected_state)


# ---------------------------------------------------------------------------
# The contract.


def test_task_specific_leaves_get_their_own_task_gradient():
  _, params, task_losses, x, y = _three_heads_problem()
  losses, task_grads = mtl.value_and_task_grads(task_losses)(params, x, y)
  tx = mtl.logse(3, task_specific=_is_head)
  updates, state = jax.jit(tx.update)(task_grads, tx.init(params), params,
                                      task_losses=losses)
  weights = 0.5 / np.asarray(losses)
  for t in range(3):
    # A head sees its own gradient, unweighted: METHODS.md "Shared and
    # task-specific parameters".
    np.testing.assert_allclose(updates['heads'][t]['kernel'],
                               task_grads['heads'][t]['kernel'][t], rtol=1e-6)
  expected_trunk = np.einsum('t,tij->ij', weights, task_grads['trunk']['kernel'])
  np.testing.assert_allclose(updates['trunk']['kernel'], expected_trunk,
                             rtol=1e-5, atol=1e-7)


def test_task_specific_leaves_are_left_out_of_the_gramian():
  seen = []

  def weigh(stats, state):
    seen.append(stats.gram)
    return jnp.ones(2), state

  grads = {'shared': WORKED['a'], 'head': jnp.array([[100.0], [0.0]])}
  tx = mtl.balancer(2, weigh, name='probe',
                    task_specific={'shared': False, 'head': True})
  updates, _ = tx.update(grads, tx.init(None))
  np.testing.assert_allclose(seen[0], [[17.0, -23.0], [-23.0, 37.0]])
  np.testing.assert_allclose(updates['head'], [100.0])


def test_task_specific_accepts_a_prefix_mask():
  grads = {'trunk': {'kernel': WORKED['a'], 'bias': WORKED['b']},
           'heads': [{'kernel': jnp.array([[1.0], [0.0]])},
                     {'kernel': jnp.array([[0.0], [2.0]])}]}
  full_mask = {'trunk': {'kernel': False, 'bias': False},
               'heads': [{'kernel': True}, {'kernel': True}]}
  by_prefix = mtl.logse(2, task_specific={'trunk': False, 'heads': True})
  by_leaf = mtl.logse(2, task_specific=full_mask)
  losses = jnp.array([0.5, 2.0])
  expected, _ = by_leaf.update(grads, by_leaf.init(None), task_losses=losses)
  updates, _ = by_prefix.update(grads, by_prefix.init(None), task_losses=losses)
  jax.tree.map(np.testing.assert_array_equal, updates, expected)
  # Heads: their own task's gradient; trunk: weights 1/(2 L) = [1, 0.25].
  np.testing.assert_allclose(updates['heads'][1]['kernel'], [2.0])
  np.testing.assert_allclose(updates['trunk']['kernel'], [-4 + 1.5, 1.25])
  with pytest.raises(ValueError, match='task_specific'):
    mtl.logse(2, task_specific={'trunk': False}).update(
        grads, by_leaf.init(None), task_losses=losses)


def test_chains_with_adam_and_does_not_retrace():
  traces = []

  def weigh(stats, state):
    traces.append(1)
    return 0.5 / stats.losses, state

  tx = optax.chain(mtl.balancer(2, weigh, name='probe', needs_losses=True,
                                uses_gram=False), optax.adam(1e-3))
  params = {'a': jnp.zeros(2), 'b': jnp.zeros(1)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  first, state = update(WORKED, state, params, task_losses=jnp.array([1.0, 2.0]))
  update(WORKED, state, params, task_losses=jnp.array([3.0, 4.0]))
  assert len(traces) == 1
  # Adam's first step is -lr * sign(g) elementwise.
  np.testing.assert_allclose(first['b'], [-1e-3], rtol=1e-4)


def test_nnx_optimizer_forwards_task_losses_inside_nnx_jit():
  model, _, task_losses, x, y = _three_heads_problem()
  optimizer = nnx.Optimizer(
      model, optax.chain(mtl.logse(3, task_specific=_is_head), optax.sgd(0.01)),
      wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, x, y):
    params = nnx.state(model, nnx.Param)
    losses, task_grads = mtl.value_and_task_grads(task_losses)(params, x, y)
    optimizer.update(model, task_grads, task_losses=losses)
    return losses

  first = train_step(model, optimizer, x, y)
  for _ in range(20):
    last = train_step(model, optimizer, x, y)
  assert np.all(np.asarray(last) < np.asarray(first))
  np.testing.assert_allclose(optimizer.opt_state[0].weights, 0.5 / np.asarray(
      task_losses(nnx.state(model, nnx.Param), x, y)), rtol=0.2)


def test_bfloat16_gradients_give_bfloat16_updates():
  grads = jax.tree.map(lambda g: g.astype(jnp.bfloat16), WORKED)
  updates, _ = _update(mtl.logse(2), grads, jnp.array([1.0, 2.0]))
  assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))


# ---------------------------------------------------------------------------
# Bad input.


def test_missing_losses_names_the_method():
  tx = mtl.logse(2)
  with pytest.raises(ValueError, match='logse needs the per-task losses'):
    tx.update(WORKED, tx.init(None))


def test_wrong_task_axis_is_a_trace_time_error():
  tx = mtl.equal_weighting(3)
  with pytest.raises(ValueError, match='num_tasks=3'):
    jax.jit(tx.update)(WORKED, tx.init(None))
  with pytest.raises(ValueError, match='task_losses has shape'):
    jax.jit(tx.update)(jnp.ones((3, 2)), tx.init(None),
                       task_losses=jnp.ones(2))


@pytest.mark.parametrize('build, argument', [
    (lambda: mtl.equal_weighting(0), 'num_tasks'),
    (lambda: mtl.equal_weighting(2.0), 'num_tasks'),
    (lambda: mtl.equal_weighting(2, reduction='max'), 'reduction'),
    (lambda: mtl.fixed_weighting(2, [1.0]), 'weights'),
    (lambda: mtl.fixed_weighting(2, [1.0, -1.0]), 'weights'),
    (lambda: mtl.logse(2, floor=0.0), 'floor'),
    (lambda: mtl.uncertainty_weighting(2, learning_rate=-1.0), 'learning_rate'),
    (lambda: mtl.uncertainty_weighting(2, form='gauss'), 'form'),
])
def test_invalid_construction_names_the_argument(build, argument):
  with pytest.raises(ValueError, match=argument):
    build()
