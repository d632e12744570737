"""M-ConFIG: hand-worked steps, and a float64 port of the official operator.

The reference below re-derives ``PseudoMomentumOperator.calculate_gradient``
of ``tum-pbs/ConFIG`` (``conflictfree/momentum_operator.py``) in NumPy
float64, with the ConFIG direction of the bias-corrected momenta from a
pseudo-inverse (``g_u = U⁺ 1``, length = the sum of the projections, the
official defaults).
"""

import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl

import jitted_steps  # pylint: disable=g-bad-import-order


def _config_direction(vectors):
  units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
  direction = np.linalg.pinv(units) @ np.ones(len(vectors))
  unit = direction / np.linalg.norm(direction)
  return np.sum(vectors @ unit) * unit


def _official_operator(steps, chosen, b1=0.9, b2=0.999, eps=1e-8):
  """The outputs of the official operator given ``chosen[k]`` at step k."""
  num_tasks, size = steps[0].shape
  momenta = np.zeros((num_tasks, size))
  counts = np.zeros(num_tasks)
  t, pseudo_mean, second = 0, np.zeros(size), np.zeros(size)
  outputs = []
  for grads, indices in zip(steps, chosen):
    for i in indices:
      counts[i] += 1
      momenta[i] = b1 * momenta[i] + (1 - b1) * grads[i]
    if np.any(counts == 0):
      outputs.append(np.zeros(size))
      continue
    t += 1
    corrected = momenta / (1 - b1 ** counts)[:, None]
    direction = _config_direction(corrected)
    new_mean = direction * (1 - b1 ** t)
    pseudo_grad = (new_mean - b1 * pseudo_mean) / (1 - b1)
    pseudo_mean = new_mean
    second = b2 * second + (1 - b2) * pseudo_grad ** 2
    outputs.append(direction / (np.sqrt(second / (1 - b2 ** t)) + eps))
  return outputs


_steps = jitted_steps.run


def test_first_three_steps_by_hand():
  # g_1 = (1, 0), g_2 = (0, 3) at every step; round robin 0, 1, 0.
  # Step 1: only m_1 = 0.1 g_1 exists: output 0.
  # Step 2: m_2 = 0.1 g_2; m̂ = (1, 0), (0, 3); ConFIG: U = I, g_u = (1, 1),
  # length (1 + 3)/√2, d = (2, 2) = 2 m̂_1 + (2/3) m̂_2. At k = 1,
  # ĥ = 0.1 d, h = ĥ/0.1 = d, √ŝ = |d|: output d/|d| = (1, 1).
  # Step 3: m_1 = 0.9·0.1 g_1 + 0.1 g_1 = 0.19 g_1, m̂_1 = g_1 again, d =
  # (2, 2); ĥ = 0.19 d, h = (0.19 d − 0.9·0.1 d)/0.1 = d, ŝ = d² again:
  # output (1, 1).
  grads = jnp.array([[1.0, 0.0], [0.0, 3.0]])
  outputs, state = _steps(mtl.m_config(2), [grads] * 3, jnp.zeros(2))
  np.testing.assert_array_equal(outputs[0], [0.0, 0.0])
  np.testing.assert_allclose(outputs[1], [1.0, 1.0], rtol=1e-6)
  # float32's 1 − 0.999² keeps about four significant digits: 1e-5.
  np.testing.assert_allclose(outputs[2], [1.0, 1.0], rtol=1e-5)
  np.testing.assert_allclose(mtl.last_weights(state), [2.0, 2.0 / 3],
                             rtol=1e-6)
  np.testing.assert_array_equal(state.task_counts, [2, 1])
  assert int(state.steps) == 2


@pytest.mark.parametrize('update_all_tasks', [False, True])
def test_matches_the_official_operator_in_float64(update_all_tasks):
  rng = np.random.default_rng(0)
  num_tasks, size = 3, 5
  steps = [rng.normal(size=(num_tasks, size)) + 0.5 for _ in range(8)]
  chosen = ([range(num_tasks)] * len(steps) if update_all_tasks else
            [[k % num_tasks] for k in range(len(steps))])
  expected = _official_operator(steps, chosen)
  outputs, _ = _steps(mtl.m_config(num_tasks,
                                   update_all_tasks=update_all_tasks),
                      [jnp.asarray(g, jnp.float32) for g in steps],
                      jnp.zeros(size))
  for output, reference in zip(outputs, expected):
    np.testing.assert_allclose(output, reference, rtol=1e-4, atol=1e-5)


def test_task_specific_leaves_get_their_own_scaled_momentum():
  # The head's direction is its task's bias-corrected momentum (the other
  # rows are zero), scaled by the same pseudo second moment as the trunk:
  # with constant gradients the first scaled output is sign(m̂) = 1.
  task_specific = {'trunk': False, 'head': True}
  params = {'trunk': jnp.zeros(2), 'head': jnp.zeros(1)}
  grads = {'trunk': jnp.array([[1.0, 0.0], [0.0, 3.0]]),
           'head': jnp.array([[0.0], [5.0]])}
  tx = mtl.m_config(2, task_specific=task_specific)
  outputs, _ = _steps(tx, [grads] * 2, params)
  np.testing.assert_array_equal(outputs[0]['head'], [0.0])
  np.testing.assert_allclose(outputs[1]['head'], [1.0], rtol=1e-6)
  np.testing.assert_allclose(outputs[1]['trunk'], [1.0, 1.0], rtol=1e-6)


def test_bad_hyperparameters_are_rejected():
  for kwargs in ({'b1': 1.0}, {'b2': -0.5}, {'eps': -1.0}):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
      mtl.m_config(2, **kwargs)
  with pytest.raises(ValueError, match='update_all_tasks'):
    mtl.m_config(2, update_all_tasks=1)


def test_moving_every_task_is_permutation_invariant():
  # update_all_tasks=True treats the tasks alike: permuting them permutes
  # ConFIG's weights and leaves the output unchanged, at every step. (The
  # default round robin visits the tasks in index order, so it is not.)
  rng = np.random.default_rng(5)
  steps = [rng.normal(size=(4, 6)).astype(np.float32) + 0.3
           for _ in range(4)]
  permutation = np.array([2, 0, 3, 1])
  tx = mtl.m_config(4, update_all_tasks=True)
  outputs, state = _steps(tx, [jnp.asarray(g) for g in steps], jnp.zeros(6))
  permuted, permuted_state = _steps(
      tx, [jnp.asarray(g[permutation]) for g in steps], jnp.zeros(6))
  for output, permuted_output in zip(outputs, permuted):
    np.testing.assert_allclose(permuted_output, output, rtol=1e-4,
                               atol=1e-5)
  np.testing.assert_allclose(mtl.last_weights(permuted_state),
                             np.asarray(mtl.last_weights(state))[permutation],
                             rtol=1e-4, atol=1e-6)
