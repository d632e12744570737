"""GradDrop: against a float64 NumPy reference with the same draws, contract."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from mtl_optax._src.methods import graddrop as graddrop_lib

NUM_TASKS = 3


def _tree(matrix):
  matrix = jnp.asarray(matrix, jnp.float32)
  return {'w': matrix[:, :6].reshape(-1, 2, 3), 'b': matrix[:, 6:]}


def _params():
  return {'w': jnp.zeros((2, 3)), 'b': jnp.zeros((2,))}


@functools.lru_cache(maxsize=None)
def _transform(leak=0.0, key=0):
  tx = mtl.graddrop(NUM_TASKS, leak=leak, key=key)
  return tx, jax.jit(tx.update)


def _draws(key, shapes):
  """The library's uniform draws from ``key``, in float64, and the next key."""
  draws, next_key = graddrop_lib.uniform_draws(key, shapes)
  return [np.asarray(draw, np.float64) for draw in draws], next_key


def test_draws_are_uniform_reproducible_and_independent_per_leaf():
  key = jax.random.key_data(jax.random.key(7))
  (first, second, scalar), next_key = graddrop_lib.uniform_draws(
      key, [(200, 500), (100000,), ()])
  again, _ = graddrop_lib.uniform_draws(key, [(200, 500), (100000,), ()])
  np.testing.assert_array_equal(first, again[0])
  assert first.shape == (200, 500) and scalar.shape == ()
  for draw in (first, second):
    draw = np.asarray(draw, np.float64).ravel()
    assert draw.dtype == np.float64 and 0.0 <= draw.min() and draw.max() < 1.0
    # Kolmogorov-Smirnov distance to U[0, 1): its 0.999 quantile is
    # 1.95 / sqrt(n) for n draws.
    ordered = np.sort(draw)
    n = ordered.size
    distance = np.max(np.maximum(np.arange(1, n + 1) / n - ordered,
                                 ordered - np.arange(n) / n))
    assert distance < 1.95 / np.sqrt(n), distance
  # The two leaves' streams differ; the key moves on.
  assert abs(np.corrcoef(np.ravel(first)[:100000], second)[0, 1]) < 0.02
  assert not np.array_equal(next_key, key)
  (following,), _ = graddrop_lib.uniform_draws(next_key, [(200, 500)])
  assert not np.array_equal(following, first)


def reference(leaves, draws, leak):
  """Algorithm 1 of the paper per coordinate, in float64.

  Returns the update of each leaf and the kept share of each task's ‖g‖².
  """
  updates, kept_sq, total_sq = [], 0.0, 0.0
  for grads, draw in zip(leaves, draws):
    grads = np.asarray(grads, np.float64)
    purity = 0.5 * (1 + grads.sum(0) / np.abs(grads).sum(0))
    mask = np.where(purity > draw, grads > 0, grads < 0)
    updates.append((leak * grads + (1 - leak) * mask * grads).sum(0))
    flat = grads.reshape(len(grads), -1)
    kept_sq = kept_sq + ((mask * grads).reshape(len(grads), -1) ** 2).sum(1)
    total_sq = total_sq + (flat ** 2).sum(1)
  return updates, leak + (1 - leak) * kept_sq / total_sq


@pytest.mark.parametrize('leak', [0.0, 0.3])
def test_matches_float64_reference_over_several_steps(leak):
  tx, update = _transform(leak=leak, key=3)
  state = tx.init(_params())
  rng = np.random.default_rng(0)
  for _ in range(3):
    matrix = rng.normal(size=(NUM_TASKS, 8))
    tree = _tree(matrix)
    # Leaves in the order jax.tree.leaves gives them: 'b' then 'w'.
    leaves = [np.asarray(tree['b']), np.asarray(tree['w'])]
    draws, next_key = _draws(state.key, [leaf.shape[1:] for leaf in leaves])
    expected, expected_weights = reference(leaves, draws, leak)
    updates, state = update(tree, state)
    np.testing.assert_allclose(updates['b'], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updates['w'], expected[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.kept_share, expected_weights, rtol=1e-5)
    np.testing.assert_array_equal(state.key, next_key)  # Split every step.


def test_pure_signs_are_kept_and_zero_coordinates_stay_zero():
  # Columns: all positive (P = 1: kept), all negative (P = 0: kept), all zero
  # (P = ½ by convention, update 0), whatever the draw.
  matrix = np.zeros((NUM_TASKS, 8))
  matrix[:, 0] = [1.0, 2.0, 3.0]
  matrix[:, 1] = [-1.0, -0.5, -2.0]
  tx, update = _transform()
  updates, state = update(_tree(matrix), tx.init(_params()))
  flat = np.asarray(updates['w']).reshape(-1)
  np.testing.assert_allclose(flat[:2], [6.0, -3.5])
  np.testing.assert_array_equal(flat[2:], 0.0)
  np.testing.assert_array_equal(updates['b'], 0.0)
  np.testing.assert_allclose(state.kept_share, [1.0, 1.0, 1.0])


def test_each_coordinate_keeps_one_sign():
  # With mixed signs, every coordinate of the update is the sum of either
  # the positive or the negative entries (leak 0).
  matrix = np.random.default_rng(1).normal(size=(NUM_TASKS, 8))
  tx, update = _transform()
  updates, _ = update(_tree(matrix), tx.init(_params()))
  tree = _tree(matrix)
  for name in ('w', 'b'):
    grads = np.asarray(tree[name], np.float64)
    positive = np.where(grads > 0, grads, 0).sum(0)
    negative = np.where(grads < 0, grads, 0).sum(0)
    got = np.asarray(updates[name], np.float64)
    assert np.all(np.isclose(got, positive, rtol=1e-6)
                  | np.isclose(got, negative, rtol=1e-6))


def test_full_leak_is_the_plain_sum():
  matrix = np.random.default_rng(2).normal(size=(NUM_TASKS, 8))
  tx, update = _transform(leak=1.0)
  updates, state = update(_tree(matrix), tx.init(_params()))
  np.testing.assert_allclose(updates['b'], matrix[:, 6:].sum(0), rtol=1e-6)
  np.testing.assert_allclose(state.kept_share, [1.0, 1.0, 1.0])


def test_task_specific_leaves_get_their_own_task_gradient():
  matrix = np.random.default_rng(4).normal(size=(NUM_TASKS, 8))
  tree = _tree(matrix)
  specific = {'b': True, 'w': False}
  tx = mtl.graddrop(NUM_TASKS, task_specific=specific)
  updates, _ = jax.jit(tx.update)(tree, tx.init(_params()))
  np.testing.assert_allclose(updates['b'], matrix[:, 6:].sum(0), rtol=1e-6)
  # The shared leaf alone decides its draws: 1 leaf, key 0.
  draws, _ = _draws(tx.init(_params()).key, [(2, 3)])
  expected, _ = reference([np.asarray(tree['w'])], draws, 0.0)
  np.testing.assert_allclose(updates['w'], expected[0], rtol=1e-5, atol=1e-6)


def test_non_finite_input_poisons_update_and_keeps_state():
  tx, update = _transform()
  state = tx.init(_params())
  matrix = np.random.default_rng(5).normal(size=(NUM_TASKS, 8))
  matrix[1, 2] = np.nan
  updates, new_state = update(_tree(matrix), state)
  assert np.all(np.isnan(updates['w'])) and np.all(np.isnan(updates['b']))
  np.testing.assert_array_equal(new_state.key, state.key)
  np.testing.assert_array_equal(new_state.kept_share, state.kept_share)


def test_wrong_task_axis_and_arguments_are_rejected():
  tx, _ = _transform()
  with pytest.raises(ValueError, match='num_tasks=3'):
    tx.update(jnp.zeros((2, 4)), tx.init(jnp.zeros(4)))
  with pytest.raises(ValueError, match='leak'):
    mtl.graddrop(2, leak=1.5)


def test_large_leaf_through_column_blocks_matches_reference():
  # [3, 2, 320000]: 640000 columns per task (7.7 MB), 39 blocks of 16400 on
  # CPU and a tail of 400 (column_blocks.width); elsewhere the whole leaf.
  tx = mtl.graddrop(NUM_TASKS, leak=0.2, key=7)
  grads = np.random.default_rng(6).normal(size=(NUM_TASKS, 2, 320000))
  grads[:, :, :100] *= 1e3  # Scales differ across blocks.
  state = tx.init(jnp.zeros((2, 320000)))
  updates, new_state = jax.jit(tx.update)(jnp.asarray(grads, jnp.float32),
                                          state)
  leaves = [np.asarray(jnp.asarray(grads, jnp.float32))]
  draws, _ = _draws(state.key, [leaves[0].shape[1:]])
  expected, expected_weights = reference(leaves, draws, 0.2)
  np.testing.assert_allclose(updates, expected[0], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(new_state.kept_share, expected_weights, rtol=1e-5)


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_non_finite_entry_in_a_late_block_poisons_the_update(bad):
  tx = mtl.graddrop(NUM_TASKS)
  grads = np.ones((NUM_TASKS, 700000), np.float32)  # 42 blocks, a tail.
  grads[2, 699000] = bad  # In the tail, after the blocks.
  state = tx.init(jnp.zeros(700000))
  updates, new_state = jax.jit(tx.update)(jnp.asarray(grads), state)
  assert np.all(np.isnan(updates))
  np.testing.assert_array_equal(new_state.key, state.key)
  grads[2, 699000] = 1.0
  grads[1, 20000] = bad  # In the second block.
  updates, _ = jax.jit(tx.update)(jnp.asarray(grads), state)
  assert np.all(np.isnan(updates))


@pytest.mark.parametrize('magnitude', [1e25, 1e-25])
@pytest.mark.parametrize('columns', [8, 700000])  # Whole leaf, blocks.
def test_shares_survive_squares_out_of_float32_range(magnitude, columns):
  # GradDrop is scale-free: c·J keeps the purities, so the same masks, the
  # update c·d and the same kept shares. In float32, squares of 1e25
  # overflow and of 1e-25 flush to zero, so only the rescaled sums can give
  # them.
  grads = np.random.default_rng(8).normal(size=(NUM_TASKS, columns))
  grads[2] = 0.0  # A task without gradient keeps its share 1.
  tx = mtl.graddrop(NUM_TASKS, key=5)
  state = tx.init(jnp.zeros(columns))
  update = jax.jit(tx.update)
  plain, plain_state = update(jnp.asarray(grads, jnp.float32), state)
  scaled, scaled_state = update(jnp.asarray(grads * magnitude, jnp.float32),
                                state)
  np.testing.assert_allclose(plain_state.kept_share[2], 1.0)
  np.testing.assert_allclose(scaled_state.kept_share, plain_state.kept_share,
                             rtol=1e-5)
  np.testing.assert_allclose(np.asarray(scaled, np.float64) / magnitude,
                             plain, rtol=1e-5, atol=1e-5)
