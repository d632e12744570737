"""MTAdam: hand-worked steps of the official update, and optax.adam as a peer.

The hand derivations follow ``ItzikMalkiel/MTAdam``'s ``mtadam.py``: per
leaf, norm averages ``n_t`` (set at the first step, then an EMA with β₃),
gradients rescaled to the first task's norm, per-task Adam moments, and the
step ``−η Σ_t m̂_t / (max_t √v̂_t + ε)``.
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
  # Step 1: g_1 = (3, 4, 0), ‖g_1‖ = 5; g_2 = (0, 6, 8), ‖g_2‖ = 10. The
  # averages start at the norms, n = (5, 10); the anchor is task 1, so the
  # factors are (1, 5/10) and ĝ_1 = (3, 4, 0), ĝ_2 = (0, 3, 4). At k = 1,
  # m̂_t = ĝ_t and √v̂_t = |ĝ_t|: Σ_t m̂_t = (3, 7, 4), max_t √v̂_t =
  # (3, 4, 4), and the update is −0.1 (3/3, 7/4, 4/4) = (−0.1, −0.175, −0.1).
  #
  # Step 2: g_1 = (6, 8, 0), ‖·‖ = 10; g_2 = (0, 0, 5), ‖·‖ = 5.
  # n = 0.9 (5, 10) + 0.1 (10, 5) = (5.5, 9.5): factors (1, 11/19),
  # ĝ_1 = (6, 8, 0), ĝ_2 = (0, 0, 55/19).
  # m_1 = 0.9·0.1·(3, 4, 0) + 0.1·(6, 8, 0) = (0.87, 1.16, 0),
  # m_2 = 0.9·0.1·(0, 3, 4) + 0.1·(0, 0, 55/19) = (0, 0.27, 0.36 + 5.5/19).
  # v_1 = 1e-3 (0.999·9 + 36, 0.999·16 + 64, 0) = 1e-3 (44.991, 79.984, 0),
  # v_2 = 1e-3 (0, 0.999·9, 0.999·16 + (55/19)²).
  # With 1 − β₁² = 0.19 and 1 − β₂² = 0.001999:
  # Σ_t m̂_t = (0.87, 1.43, 0.36 + 5.5/19)/0.19
  #         = (4.578947, 7.526316, 3.418283),
  # max_t √v̂_t = (√(0.044991/0.001999), √(0.079984/0.001999),
  #               √(v_2[2]/0.001999)) = (4.744128, 6.325504, 3.491109),
  # update = −0.1 · ratio = (−0.0965182, −0.1189837, −0.0979139).
  steps = [jnp.array([[3.0, 4.0, 0.0], [0.0, 6.0, 8.0]]),
           jnp.array([[6.0, 8.0, 0.0], [0.0, 0.0, 5.0]])]
  (first, second), state = _steps(mtl.mtadam(2, learning_rate=0.1), steps,
                                  jnp.zeros(3))
  np.testing.assert_allclose(first, [-0.1, -0.175, -0.1], rtol=1e-6)
  # float32's 1 − 0.999² keeps about four significant digits (optax.adam's
  # bias correction does the same): a relative 1e-5.
  np.testing.assert_allclose(second, [-0.0965182, -0.1189837, -0.0979139],
                             rtol=1e-5)
  np.testing.assert_allclose(state.norms, [[5.5, 9.5]], rtol=1e-6)
  np.testing.assert_allclose(state.balancing_factors, [1.0, 11 / 19],
                             rtol=1e-6)
  np.testing.assert_allclose(mtl.last_weights(state), [1.0, 11 / 19],
                             rtol=1e-6)


def test_norms_are_per_leaf_and_the_anchor_skips_zero_tasks():
  # Leaf 'a': task 1 is zero there, so task 2 is the anchor (factor 1) and
  # task 1 keeps factor 1 (its gradient is not rescaled). Leaf 'b': anchor
  # task 1 with ‖g_1‖ = 2, ‖g_2‖ = 8: factors (1, 1/4), with ratios
  # (1, 3): (1, 3/4). The diagnostic is the mean over the leaves.
  grads = {'a': jnp.array([[0.0, 0.0], [3.0, 4.0]]),
           'b': jnp.array([[2.0], [8.0]])}
  params = {'a': jnp.zeros(2), 'b': jnp.zeros(1)}
  tx = mtl.mtadam(2, ratios=[1.0, 3.0])
  (updates,), state = _steps(tx, [grads], params)
  np.testing.assert_allclose(state.norms, [[0.0, 5.0], [2.0, 8.0]])
  np.testing.assert_allclose(state.balancing_factors,
                             [(1.0 + 1.0) / 2, (3.0 + 0.75) / 2], rtol=1e-6)
  # Leaf 'b' at k = 1: ĝ = (2, 6): −1e-3 (2 + 6) / max(2, 6).
  np.testing.assert_allclose(updates['b'], [-1e-3 * 8 / 6], rtol=1e-5)


def test_one_task_is_optax_adam():
  # T = 1: the factor is r_1 = 1 and the maximum is over one task.
  rng = np.random.default_rng(0)
  steps = [jnp.asarray(rng.normal(size=(1, 5)), jnp.float32) * 10.0 ** i
           for i in range(-2, 3)]
  outputs, _ = _steps(mtl.mtadam(1, learning_rate=0.01), steps, jnp.zeros(5))
  adam = optax.adam(0.01)
  state = adam.init(jnp.zeros(5))
  for grads, output in zip(steps, outputs):
    expected, state = adam.update(grads[0], state)
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-9)


def test_task_specific_leaves_get_optax_adam_on_their_own_gradient():
  task_specific = {'trunk': False, 'head0': True, 'head1': True}
  params = {'trunk': jnp.zeros(2), 'head0': jnp.zeros(2),
            'head1': jnp.zeros(1)}
  rng = np.random.default_rng(1)
  steps = []
  for _ in range(3):
    steps.append({
        'trunk': jnp.asarray(rng.normal(size=(2, 2)), jnp.float32),
        'head0': jnp.asarray(np.stack([rng.normal(size=2), np.zeros(2)]),
                             jnp.float32),
        'head1': jnp.asarray([[0.0], [rng.normal()]], jnp.float32)})
  tx = mtl.mtadam(2, learning_rate=0.05, task_specific=task_specific)
  outputs, _ = _steps(tx, steps, params)
  for head in ('head0', 'head1'):
    adam = optax.adam(0.05)
    state = adam.init(params[head])
    for grads, output in zip(steps, outputs):
      expected, state = adam.update(grads[head].sum(axis=0), state)
      np.testing.assert_allclose(output[head], expected, rtol=1e-5)


def test_huge_and_tiny_gradients_give_the_same_steps():
  # The update depends on ratios of norms and on m̂/√v̂: scaling every
  # gradient by 1e±20 (squares outside float32) changes nothing but ε's
  # share, and the state stays finite.
  rng = np.random.default_rng(2)
  steps = [jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
           for _ in range(3)]
  reference, _ = _steps(mtl.mtadam(3, eps=0.0), steps, jnp.zeros(4))
  for scale in (1e-20, 1e20):
    scaled = [grads * np.float32(scale) for grads in steps]
    outputs, state = _steps(mtl.mtadam(3, eps=0.0), scaled, jnp.zeros(4))
    for output, expected in zip(outputs, reference):
      np.testing.assert_allclose(output, expected, rtol=1e-5)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))


def test_schedule_and_bad_hyperparameters():
  steps = [jnp.array([[1.0, 2.0], [3.0, -1.0]])] * 2
  constant, _ = _steps(mtl.mtadam(2, learning_rate=0.1), steps, jnp.zeros(2))
  # A schedule is read at the update's count (0, then 1), as optax does.
  scheduled, _ = _steps(
      mtl.mtadam(2, learning_rate=lambda count: 0.1 * (count + 1)), steps,
      jnp.zeros(2))
  np.testing.assert_allclose(scheduled[0], constant[0], rtol=1e-6)
  np.testing.assert_allclose(scheduled[1], 2 * constant[1], rtol=1e-6)
  for kwargs in ({'b1': 1.0}, {'b2': -0.1}, {'b3': 1.5}, {'eps': -1.0},
                 {'learning_rate': -1.0}):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
      mtl.mtadam(2, **kwargs)
  with pytest.raises(ValueError, match='ratios'):
    mtl.mtadam(3, ratios=[1.0, 2.0])
