"""MetaBalance: auxiliary gradients rescaled toward the target task's norm.

Expected values are worked by hand from the official code's formula
(``facebookresearch/MetaBalance``, ``metabalance.py``): per task,
``m ← β m + (1 − β) ‖g‖`` from 0, then ``g ← r · m_target / m · g + (1 − r) g``.
A float64 NumPy transcription of that loop (one parameter tensor) checks the
same numbers.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl

# Two steps, T = 3, target task 0. Norms: step 1 [5, 10, 1], step 2 [2, 10, 0].
_STEPS = [np.array([[3.0, 4.0], [0.0, 10.0], [1.0, 0.0]]),
          np.array([[0.0, 2.0], [6.0, 8.0], [0.0, 0.0]])]


def _official_loop(steps, relax_factor, beta):
  """The code's per-tensor loop for one tensor, in float64."""
  norms = np.zeros(len(steps[0]))
  updates = []
  for grads in steps:
    total = np.zeros(grads.shape[1])
    for index, grad in enumerate(grads):
      norms[index] = norms[index] * beta + (1 - beta) * np.linalg.norm(grad)
      ratio = norms[0] / norms[index] if norms[index] > 0 else 1.0
      total += ratio * grad * relax_factor + grad * (1 - relax_factor)
    updates.append(total)
  return updates


def _run(tx, steps):
  update = jax.jit(tx.update)
  state, outputs = tx.init(jnp.zeros(2)), []
  for grads in steps:
    updates, state = update(jnp.asarray(grads, jnp.float32), state)
    outputs.append((np.asarray(updates), np.asarray(state.weights)))
  return outputs, state


def test_two_steps_match_the_hand_worked_formula():
  outputs, state = _run(mtl.metabalance(3), _STEPS)
  # Step 1: m = 0.1 [5, 10, 1] = [0.5, 1, 0.1]; m_0/m = [1, 0.5, 5];
  # w = 0.7 · ratio + 0.3 = [1, 0.65, 3.8];
  # d = (3, 4) + 0.65 (0, 10) + 3.8 (1, 0) = (6.8, 10.5).
  np.testing.assert_allclose(outputs[0][1], [1.0, 0.65, 3.8], rtol=1e-6)
  np.testing.assert_allclose(outputs[0][0], [6.8, 10.5], rtol=1e-6)
  # Step 2: m = 0.9 [0.5, 1, 0.1] + 0.1 [2, 10, 0] = [0.65, 1.9, 0.09];
  # w = [1, 0.7 · 0.65/1.9 + 0.3, 0.7 · 0.65/0.09 + 0.3]
  #   = [1, 0.5394737, 5.3555556]; d = (0, 2) + 0.5394737 (6, 8).
  np.testing.assert_allclose(outputs[1][1], [1.0, 0.5394737, 5.3555556],
                             rtol=1e-6)
  np.testing.assert_allclose(outputs[1][0], [3.2368421, 6.3157895],
                             rtol=1e-6)
  np.testing.assert_allclose(state.weighting_state.norm_ema,
                             [0.65, 1.9, 0.09], rtol=1e-6)
  for (update, _), expected in zip(outputs, _official_loop(_STEPS, 0.7, 0.9)):
    np.testing.assert_allclose(update, expected, rtol=1e-6)


def test_strategies_enlarge_or_reduce_only():
  # Step 1 ratios [1, 0.5, 5]: 'enlarge' floors them at 1, 'reduce' caps them.
  outputs, _ = _run(mtl.metabalance(3, strategy='enlarge'), _STEPS[:1])
  np.testing.assert_allclose(outputs[0][1], [1.0, 1.0, 3.8], rtol=1e-6)
  outputs, _ = _run(mtl.metabalance(3, strategy='reduce'), _STEPS[:1])
  np.testing.assert_allclose(outputs[0][1], [1.0, 0.65, 1.0], rtol=1e-6)


def test_target_task_and_relax_factor_extremes():
  # Target task 1 (norm 10): r = 1 gives every task the target's norm,
  # w = 10 / [5, 10, 1] = [2, 1, 10]; r = 0 is the plain sum.
  outputs, _ = _run(mtl.metabalance(3, target_task=1, relax_factor=1.0),
                    _STEPS[:1])
  np.testing.assert_allclose(outputs[0][1], [2.0, 1.0, 10.0], rtol=1e-6)
  outputs, _ = _run(mtl.metabalance(3, relax_factor=0.0), _STEPS[:1])
  np.testing.assert_allclose(outputs[0][1], [1.0, 1.0, 1.0])


def test_one_norm_over_every_shared_leaf():
  # The departure from the code's per-tensor norms: ‖g_t‖ spans both leaves,
  # ‖g_0‖ = 13 (5, 12), ‖g_1‖ = 5 (3, 4): w_1 = 0.7 · 13/5 + 0.3 = 2.12.
  grads = {'a': jnp.array([[5.0], [3.0]]), 'b': jnp.array([[12.0], [4.0]])}
  tx = mtl.metabalance(2)
  _, state = tx.update(grads, tx.init({'a': jnp.zeros(1), 'b': jnp.zeros(1)}))
  np.testing.assert_allclose(state.weights, [1.0, 2.12], rtol=1e-6)


def test_zero_gradient_task_gets_weight_one():
  outputs, _ = _run(mtl.metabalance(2), [np.array([[1.0, 0.0], [0.0, 0.0]])])
  np.testing.assert_array_equal(outputs[0][1], [1.0, 1.0])


def test_invalid_arguments_raise():
  with pytest.raises(ValueError, match='target_task'):
    mtl.metabalance(2, target_task=2)
  with pytest.raises(ValueError, match='target_task'):
    mtl.metabalance(2, target_task=-1)
  with pytest.raises(ValueError, match='target_task'):
    mtl.weightings.metabalance(target_task=1.0)
  with pytest.raises(ValueError, match='relax_factor'):
    mtl.metabalance(2, relax_factor=1.5)
  with pytest.raises(ValueError, match='beta'):
    mtl.metabalance(2, beta=1.0)
  with pytest.raises(ValueError, match='strategy'):
    mtl.metabalance(2, strategy='up')
