"""Coordinate-wise trimmed mean: TorchJD 0.18 values on J5 (issue 12) and
hand-derived ranks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl

J5 = jnp.array([[-4.0, 1, 1, 0], [6, 1, 1, 2], [1, -2, 0, 1],
                [0.5, 0.5, 3, -1], [2, 2, 2, 2]])


def test_torchjd_values_and_kept_shares():
  # TorchJD 0.18 TrimmedMean(trim_number=1) on J5.
  tx = mtl.trimmed_mean(5, trim_number=1)
  updates, state = jax.jit(tx.update)(J5, tx.init(None))
  np.testing.assert_allclose(updates, [1.1667, 0.8333, 1.3333, 1.0],
                             atol=1e-4)
  # By hand, the three middle values of each column and their tasks:
  # col 0: -4 (t0) | .5 (t3), 1 (t2), 2 (t4) | 6 (t1)  -> 3.5/3 = 1.1667;
  # col 1: -2 (t2) | .5 (t3), 1 (t0), 1 (t1) | 2 (t4)  -> 2.5/3 = .8333;
  # col 2: 0 (t2) | 1 (t0), 1 (t1), 2 (t4) | 3 (t3)    -> 4/3;
  # col 3: -1 (t3) | 0 (t0), 1 (t2), 2 (t1) | 2 (t4)   -> 3/3 = 1
  # (equal values rank by task index). Kept: t0 3, t1 3, t2 2, t3 2, t4 2
  # of 4 columns, over T − 2k = 3: weights = kept / 12.
  np.testing.assert_allclose(state.kept_share, [3 / 12, 3 / 12, 2 / 12, 2 / 12,
                                             2 / 12], rtol=1e-6)


def test_no_trimming_is_the_mean_and_heads_keep_their_gradient():
  grads = {'trunk': J5, 'head': jnp.arange(10.0).reshape(5, 2)}
  tx = mtl.trimmed_mean(5, trim_number=0, task_specific={'trunk': False,
                                                         'head': True})
  updates, state = tx.update(grads, tx.init(None))
  np.testing.assert_allclose(updates['trunk'], jnp.mean(J5, axis=0),
                             rtol=1e-6)
  # A head's own-task gradient: the sum over the task axis, [20, 25].
  np.testing.assert_array_equal(updates['head'], [20.0, 25.0])
  np.testing.assert_allclose(state.kept_share, [0.2] * 5, rtol=1e-6)


def test_a_non_finite_gradient_skips_the_step():
  tx = mtl.trimmed_mean(5, trim_number=2)
  state = tx.init(None)
  updates, new_state = tx.update(J5.at[0, 0].set(jnp.inf), state)
  assert not np.all(np.isfinite(updates))
  np.testing.assert_array_equal(new_state.kept_share, state.kept_share)


@pytest.mark.parametrize('num_tasks, trim_number, match', [
    (5, -1, 'trim_number'),
    (5, 1.0, 'trim_number'),
    (4, 2, 'num_tasks >= 2 \\* trim_number \\+ 1 = 5'),
    (0, 0, 'num_tasks'),
])
def test_invalid_arguments_are_rejected(num_tasks, trim_number, match):
  with pytest.raises(ValueError, match=match):
    mtl.trimmed_mean(num_tasks, trim_number=trim_number)
