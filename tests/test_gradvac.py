"""GradVac: against a float64 NumPy Algorithm 1 on the vectors, over steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl

import gradvac_reference  # pylint: disable=g-bad-import-order


@functools.lru_cache(maxsize=None)
def _transform(num_tasks, beta=0.01, key=0):
  tx = mtl.gradvac(num_tasks, target_rate=beta, key=key)
  return tx, jax.jit(tx.update)


def _orders(key, num_tasks):
  """The task orders the library draws from ``key`` (same splits)."""
  next_key, order_key = jax.random.split(key)
  orders = jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(
      jax.random.split(order_key, num_tasks))
  return np.asarray(orders), next_key


def reference_step(grads, targets, orders, beta):
  """Algorithm 1 of the paper on the materialised vectors, in float64."""
  grads = np.asarray(grads, np.float64)
  targets = np.array(targets, np.float64)
  modified = grads.copy()
  for i in range(len(grads)):
    for j in orders[i]:
      if j == i:
        continue
      g_i, g_j = modified[i], grads[j]
      cosine = g_i @ g_j / (np.linalg.norm(g_i) * np.linalg.norm(g_j))
      target = targets[i, j]
      if cosine < target:
        modified[i] = g_i + np.linalg.norm(g_i) * (
            target * np.sqrt(1 - cosine ** 2)
            - cosine * np.sqrt(1 - target ** 2)) / (
                np.linalg.norm(g_j) * np.sqrt(1 - target ** 2)) * g_j
      targets[i, j] = (1 - beta) * target + beta * cosine
  return modified.sum(axis=0), targets


@pytest.mark.parametrize('num_tasks, beta', [(3, 0.01), (4, 0.5)])
def test_matches_float64_reference_over_several_steps(num_tasks, beta):
  tx, update = _transform(num_tasks, beta=beta, key=7)
  rng = np.random.default_rng(num_tasks)
  state = tx.init(jnp.zeros(5))
  targets = np.zeros((num_tasks, num_tasks))
  # β = 0.5 moves the targets far from 0 within a few steps, so both branches
  # (cosine below and above its target) are exercised.
  for _ in range(4):
    grads = rng.normal(size=(num_tasks, 5)) + 0.5 * rng.normal(size=5)
    orders, next_key = _orders(state.weighting_state.key, num_tasks)
    expected_update, targets = reference_step(grads, targets, orders, beta)
    updates, state = update(jnp.asarray(grads, jnp.float32), state)
    np.testing.assert_allclose(updates, expected_update, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.weighting_state.targets, targets,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state.weights) @ grads,
                               expected_update, rtol=1e-4, atol=1e-5)
    # The key advances.
    np.testing.assert_array_equal(state.weighting_state.key, next_key)


def test_modified_cosine_reaches_the_target():
  # After the correction, cos(g'_i, g_j) equals φ̂_ij (the closed form's
  # purpose); T = 2 has a single order, so the weights tell g'_1 and g'_2.
  tx, update = _transform(2, beta=0.0)
  state = tx.init(jnp.zeros(2))
  state = state._replace(weighting_state=state.weighting_state._replace(
      targets=jnp.array([[0.0, 0.5], [0.5, 0.0]], jnp.float32)))
  grads = np.array([[1.0, 0.0], [-0.6, 0.8]])  # cos = -0.6 < 0.5.
  _, state = update(jnp.asarray(grads, jnp.float32), state)
  # Hand derivation: g'_1 = g_1 + a g_2, a = ‖g_1‖(0.5·0.8 + 0.6·√0.75)/√0.75.
  amount = (0.5 * 0.8 + 0.6 * np.sqrt(0.75)) / np.sqrt(0.75)
  modified = grads[0] + amount * grads[1]
  cosine = modified @ grads[1] / np.linalg.norm(modified)
  np.testing.assert_allclose(cosine, 0.5, rtol=1e-12)
  np.testing.assert_allclose(state.weights, [1 + amount, 1 + amount],
                             rtol=1e-5)
  # β = 0 keeps the targets.
  np.testing.assert_array_equal(state.weighting_state.targets,
                                [[0.0, 0.5], [0.5, 0.0]])


def test_first_step_is_pcgrad_and_aligned_tasks_are_untouched():
  tx, update = _transform(2)
  state = tx.init(jnp.zeros(2))
  # Conflicting: φ̂ = 0 projects each onto the other's normal (PCGrad).
  updates, _ = update(jnp.array([[1.0, 0.0], [-1.0, 1.0]]), state)
  np.testing.assert_allclose(updates, [0.5, 1.5], rtol=1e-6)
  # Positive cosines above φ̂ = 0: the plain sum.
  updates, state = update(jnp.array([[1.0, 0.0], [1.0, 1.0]]), state)
  np.testing.assert_allclose(updates, [2.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(state.weighting_state.targets,
                             [[0.0, 0.01 / np.sqrt(2)], [0.01 / np.sqrt(2), 0]],
                             rtol=1e-5)


def test_same_key_same_result_and_keys_change_the_order():
  grads = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)),
                      jnp.float32)
  tx, update = _transform(4, beta=0.01, key=1)
  first, state = update(grads, tx.init(jnp.zeros(3)))
  again, _ = update(grads, tx.init(jnp.zeros(3)))
  np.testing.assert_array_equal(first, again)
  # The next step draws new orders from the advanced key: with φ̂ ≈ 0 the
  # same gradients give a different update for some key in a few steps.
  results = [np.asarray(first)]
  for _ in range(3):
    updated, state = update(grads, state)
    results.append(np.asarray(updated))
  assert any(not np.allclose(results[0], other, rtol=1e-3) for other in results[1:])


def test_zero_norm_task_is_skipped():
  tx, update = _transform(2)
  grads = jnp.array([[1.0, 2.0], [0.0, 0.0]])
  updates, state = update(grads, tx.init(jnp.zeros(2)))
  np.testing.assert_allclose(updates, [1.0, 2.0])
  np.testing.assert_array_equal(state.weighting_state.targets,
                                np.zeros((2, 2)))


def test_invalid_target_rate_is_rejected():
  with pytest.raises(ValueError, match='target_rate'):
    mtl.gradvac(2, target_rate=1.5)


# ---------------------------------------------------------------------------
# Per-layer targets (group='layer' or a function of the key path).


def _layered(matrix):
  """A two-layer tree from [T, 6] columns: dense (bias 0:1, kernel 1:4) and
  out (kernel 4:6), in jax.tree.leaves order."""
  matrix = jnp.asarray(matrix, jnp.float32)
  return {'dense': {'bias': matrix[:, 0:1], 'kernel': matrix[:, 1:4]},
          'out': {'kernel': matrix[:, 4:6]}}


def _flat_layered(tree):
  return np.concatenate([tree['dense']['bias'], tree['dense']['kernel'],
                         tree['out']['kernel']], axis=-1)


LAYERED_PARAMS = {'dense': {'bias': jnp.zeros(1), 'kernel': jnp.zeros(3)},
                  'out': {'kernel': jnp.zeros(2)}}


def test_layer_groups_match_a_float64_loop_over_libmtl_all_layer_groups():
  # LibMTL's all_layer groups a leaf module's weight and bias: here the
  # columns 0:4 ('dense') and 4:6 ('out').
  rng = np.random.default_rng(3)
  steps = [rng.normal(size=(2, 6)) for _ in range(4)]
  # Positive cosines first, so the targets grow and later steps vaccinate.
  steps[0][1] = steps[0][0] + 0.3 * steps[0][1]
  expected_updates, expected_targets = gradvac_reference.libmtl_groups(
      steps, [(0, 4), (4, 6)], beta=0.5)
  tx = mtl.gradvac(2, beta=0.5, group='layer')
  state = tx.init(LAYERED_PARAMS)
  assert state.weighting_state.targets.shape == (2, 2, 2)
  update = jax.jit(lambda g, s: tx.update(g, s, LAYERED_PARAMS))
  for grads, expected in zip(steps, expected_updates):
    updates, state = update(_layered(grads), state)
    np.testing.assert_allclose(_flat_layered(updates), expected, rtol=1e-4,
                               atol=1e-5)
  np.testing.assert_allclose(state.weighting_state.targets, expected_targets,
                             rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_group_function_of_the_path_names_the_groups():
  # Grouping by the top-level key is 'layer' on this two-level tree; one
  # name for every leaf is 'whole'.
  grads = np.random.default_rng(4).normal(size=(3, 6)).astype(np.float32)
  by_key = mtl.gradvac(3, beta=0.5, group=lambda path: path[0].key)
  layer = mtl.gradvac(3, beta=0.5, group='layer')
  one_group = mtl.gradvac(3, beta=0.5, group=lambda path: 'all')
  whole = mtl.gradvac(3, beta=0.5)
  states = [tx.init(LAYERED_PARAMS) for tx in (by_key, layer, one_group,
                                                whole)]
  for step in range(3):
    tree = _layered(grads * (step + 1) - step)
    results = [tx.update(tree, state, LAYERED_PARAMS)
               for tx, state in zip((by_key, layer, one_group, whole),
                                    states)]
    (u_key, _), (u_layer, _), (u_one, _), (u_whole, _) = results
    states = [state for _, state in results]
    np.testing.assert_array_equal(_flat_layered(u_key),
                                  _flat_layered(u_layer))
    np.testing.assert_allclose(_flat_layered(u_one), _flat_layered(u_whole),
                               rtol=1e-5, atol=1e-6)
  assert states[0].weighting_state.targets.shape == (2, 3, 3)
  assert states[2].weighting_state.targets.shape == (1, 3, 3)


def test_layer_groups_leave_task_specific_leaves_out():
  # 'out' is a head: one group ('dense') and the head gets its own task's
  # gradient, Σ_t g_t.
  task_specific = {'dense': False, 'out': True}
  tx = mtl.gradvac(2, group='layer', task_specific=task_specific)
  state = tx.init(LAYERED_PARAMS)
  assert state.weighting_state.targets.shape == (1, 2, 2)
  grads = np.array([[1.0, 0.0, 1.0, 0.0, 2.0, 0.0],
                    [-1.0, 1.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
  updates, _ = tx.update(_layered(grads), state, LAYERED_PARAMS)
  np.testing.assert_array_equal(updates['out']['kernel'], [2.0, 0.0])
  # φ̂ = 0 at the start: PCGrad on the dense columns (1, 0, 1, 0) and
  # (−1, 1, 0, 0): cos = −1/2, each loses its projection on the other.
  g1, g2 = grads[0, :4], grads[1, :4]
  expected = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (
      g2 - (g2 @ g1) / (g1 @ g1) * g1)
  np.testing.assert_allclose(
      np.concatenate([updates['dense']['bias'], updates['dense']['kernel']]),
      expected, rtol=1e-6)


def test_bad_groups_are_rejected():
  with pytest.raises(ValueError, match='group'):
    mtl.gradvac(2, group='matrix')
  tx = mtl.gradvac(2, group=lambda path: [str(path)])  # Unhashable names.
  with pytest.raises(ValueError, match='hashable'):
    tx.init(LAYERED_PARAMS)
  # A state built for other groups is rejected at the update.
  leaf = mtl.gradvac(2, group='leaf')
  layer = mtl.gradvac(2, group='layer')
  grads = _layered(np.ones((2, 6), np.float32))
  with pytest.raises(ValueError, match='groups'):
    layer.update(grads, leaf.init(LAYERED_PARAMS), LAYERED_PARAMS)
