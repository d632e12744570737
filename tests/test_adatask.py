"""AdaTask: hand-worked steps, and one optax.adam per task as the peer.

The official code (``EnnengYang/AdaTask``, ``adatask.py``) steps the shared
parameters by ``−η Σ_t m̂_t / (√v̂_t + ε)`` with one Adam accumulator per
task, and the task-specific ones by plain Adam on their task's gradient:
the update is the sum of T independent Adam updates, one per task's
gradient, which optax.adam computes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_optax as mtl

import jitted_steps  # pylint: disable=g-bad-import-order


_steps = jitted_steps.run


def test_first_two_steps_by_hand():
  # Step 1 (k = 1): m̂_t = g_t and √v̂_t = |g_t|, so each task contributes
  # sign(g_t): g_1 = (3, −4), g_2 = (0, 100) give −0.1 (1 + 0, −1 + 1)
  # = (−0.1, 0).
  # Step 2: g_1 = (3, −4) again, g_2 = (0, −100). Task 1 saw the same
  # gradient twice: m̂ = g, √v̂ = |g|, sign again: (1, −1). Task 2, entry 2:
  # m = 0.9·0.1·100 + 0.1·(−100) = −1, m̂ = −1/0.19 = −5.263158;
  # v = 0.999·1e-3·1e4 + 1e-3·1e4 = 19.99, v̂ = 19.99/0.001999 = 1e4
  # exactly, √v̂ = 100: the direction is −0.05263158. Entry 1 is 0.
  # Update: −0.1 (1, −1 − 0.05263158) = (−0.1, 0.105263158).
  steps = [jnp.array([[3.0, -4.0], [0.0, 100.0]]),
           jnp.array([[3.0, -4.0], [0.0, -100.0]])]
  (first, second), state = _steps(mtl.adatask(2, learning_rate=0.1), steps,
                                  jnp.zeros(2))
  np.testing.assert_allclose(first, [-0.1, 0.0], atol=1e-7)
  # float32's 1 − 0.999² keeps about four significant digits: 1e-5.
  np.testing.assert_allclose(second, [-0.1, 0.105263158], rtol=1e-5)
  np.testing.assert_array_equal(mtl.last_weights(state), [1.0, 1.0])


def test_update_is_the_sum_of_one_optax_adam_per_task():
  rng = np.random.default_rng(0)
  num_tasks = 3
  # Tasks of very different scales: each keeps its own second moment.
  scales = np.array([1e-3, 1.0, 1e3])[:, None]
  steps = [jnp.asarray(rng.normal(size=(num_tasks, 4)) * scales,
                       jnp.float32) for _ in range(5)]
  outputs, _ = _steps(mtl.adatask(num_tasks, learning_rate=0.01), steps,
                      jnp.zeros(4))
  adams = [optax.adam(0.01) for _ in range(num_tasks)]
  states = [adam.init(jnp.zeros(4)) for adam in adams]
  for grads, output in zip(steps, outputs):
    expected = 0.0
    for task, adam in enumerate(adams):
      update, states[task] = adam.update(grads[task], states[task])
      expected = expected + update
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-9)


def test_task_specific_leaves_get_optax_adam_on_their_own_gradient():
  task_specific = {'trunk': False, 'head': True}
  params = {'trunk': jnp.zeros(2), 'head': jnp.zeros(3)}
  rng = np.random.default_rng(1)
  steps = [{'trunk': jnp.asarray(rng.normal(size=(2, 2)), jnp.float32),
            'head': jnp.asarray(np.stack([np.zeros(3), rng.normal(size=3)]),
                                jnp.float32)} for _ in range(3)]
  tx = mtl.adatask(2, learning_rate=0.05, task_specific=task_specific)
  outputs, _ = _steps(tx, steps, params)
  adam = optax.adam(0.05)
  state = adam.init(params['head'])
  for grads, output in zip(steps, outputs):
    expected, state = adam.update(grads['head'][1], state)
    np.testing.assert_allclose(output['head'], expected, rtol=1e-5)


def test_huge_gradients_keep_a_finite_exact_state():
  # optax.adam's v overflows float32 at 1e20 (v = g² = 1e40); the root kept
  # here is |g| √(1 − β₂): the steps equal those of the unscaled problem.
  rng = np.random.default_rng(2)
  steps = [jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
           for _ in range(3)]
  reference, _ = _steps(mtl.adatask(2, eps=0.0), steps, jnp.zeros(3))
  huge = [grads * np.float32(1e20) for grads in steps]
  outputs, state = _steps(mtl.adatask(2, eps=0.0), huge, jnp.zeros(3))
  for output, expected in zip(outputs, reference):
    # Opposite signs cancel to a few float32 ulps of η = 1e-3: atol 1e-8.
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-8)
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))


def test_bad_hyperparameters_are_rejected():
  for kwargs in ({'b1': 1.0}, {'b2': 1.0}, {'eps': -1.0},
                 {'learning_rate': -0.1}):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
      mtl.adatask(2, **kwargs)
  with pytest.raises(ValueError, match='num_tasks'):
    mtl.adatask(0)
