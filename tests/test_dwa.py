"""DWA: weights from the ratio of the last two periods' mean losses."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from one_backward import assert_both_paths_agree


def _stepper(tx, num_tasks):
  """A jitted update on identity gradients, so the update is the weights."""
  eye = jnp.eye(num_tasks)
  return jax.jit(lambda state, losses: tx.update(eye, state,
                                                 task_losses=losses))


def _run(tx, num_tasks, loss_sequence):
  step = _stepper(tx, num_tasks)
  state, weights = tx.init(None), []
  for losses in loss_sequence:
    updates, state = step(state, jnp.asarray(losses, jnp.float32))
    weights.append(np.asarray(updates))
  return weights, state


def _by_hand(ratios, temperature=2.0):
  """Eq. 7: T exp(r_t / τ) / Σ_s exp(r_s / τ), in float64."""
  exps = [math.exp(r / temperature) for r in ratios]
  return [len(ratios) * e / sum(exps) for e in exps]


_PER_STEP = [[1.0, 2.0], [0.5, 1.5], [0.25, 1.2], [0.2, 0.6]]


def test_per_step_weights_by_hand():
  weights, state = _run(mtl.dwa(2), 2, _PER_STEP)
  # The first two periods have no ratio yet: w = 1 (paper).
  np.testing.assert_array_equal(weights[0], [1.0, 1.0])
  np.testing.assert_array_equal(weights[1], [1.0, 1.0])
  # Step 2: r = L(1) / L(0) = [0.5, 0.75]; step 3: r = L(2) / L(1) = [0.5, 0.8].
  np.testing.assert_allclose(weights[2], _by_hand([0.5, 0.75]), rtol=1e-6)
  np.testing.assert_allclose(weights[3], _by_hand([0.5, 0.8]), rtol=1e-6)
  # The slower task (larger ratio) gets more weight.
  assert weights[3][1] > weights[3][0]
  # History after four steps: the last two losses.
  np.testing.assert_allclose(state.weighting_state.last_means, _PER_STEP[3])
  np.testing.assert_allclose(state.weighting_state.earlier_means, _PER_STEP[2])
  assert int(state.weighting_state.periods_done) == 4
  assert int(state.weighting_state.updates_in_period) == 0


def test_periods_average_their_losses():
  # period = 3: means of steps 0–2 and 3–5 form L(0) and L(1); steps 0–5 use
  # w = 1 and steps 6–8 use r = L(1) / L(0).
  losses = [[1.0, 4.0], [2.0, 4.0], [3.0, 4.0],   # L(0) = [2, 4]
            [1.0, 3.0], [1.5, 3.0], [0.5, 3.0],   # L(1) = [1, 3]
            [9.0, 9.0], [9.0, 9.0], [1.0, 1.0]]   # L(2) = [19/3, 19/3]
  weights, state = _run(mtl.dwa(2, period=3), 2, losses)
  for k in range(6):
    np.testing.assert_array_equal(weights[k], [1.0, 1.0])
  for k in range(6, 9):  # The losses of the period in progress do not count.
    np.testing.assert_allclose(weights[k], _by_hand([0.5, 0.75]), rtol=1e-6)
  np.testing.assert_allclose(state.weighting_state.last_means, [19 / 3, 19 / 3],
                             rtol=1e-6)
  np.testing.assert_allclose(state.weighting_state.earlier_means, [1.0, 3.0],
                             rtol=1e-6)
  assert int(state.weighting_state.periods_done) == 3

  # Mid-period: after 7 updates, one update of period 2 is recorded.
  _, state = _run(mtl.dwa(2, period=3), 2, losses[:7])
  assert int(state.weighting_state.updates_in_period) == 1
  np.testing.assert_allclose(state.weighting_state.running_mean, [9.0, 9.0])


def test_temperature():
  weights, _ = _run(mtl.dwa(2, temperature=0.5), 2, _PER_STEP[:3])
  np.testing.assert_allclose(weights[2], _by_hand([0.5, 0.75], 0.5),
                             rtol=1e-6)
  # A huge temperature gives (nearly) equal weighting.
  weights, _ = _run(mtl.dwa(2, temperature=1e6), 2, _PER_STEP[:3])
  np.testing.assert_allclose(weights[2], [1.0, 1.0], rtol=1e-6)


def test_zero_and_negative_losses_are_floored():
  # L(0) = [0, -1] counts as [1e-8, 1e-8]; L(1) = [1, 1e-8]: r = [1e8, 1], so
  # the first task takes all the weight, w = [2, 0] (exp(-5e7) underflows).
  weights, state = _run(mtl.dwa(2), 2, [[0.0, -1.0], [1.0, 0.0], [1.0, 1.0]])
  np.testing.assert_allclose(weights[2], [2.0, 0.0])
  assert np.all(np.isfinite(state.weighting_state.last_means))


def test_extreme_ratios_and_tiny_temperature_stay_finite():
  weights, _ = _run(mtl.dwa(3, temperature=1e-30), 3,
                    [[1e-8, 1.0, 3e38], [3e38, 3e38, 1e-8], [1.0, 1.0, 1.0]])
  # r = [3e46, 3e38, 3e-47]; r / τ of the first two is capped at float32 max,
  # so they tie.
  np.testing.assert_allclose(weights[2], [1.5, 1.5, 0.0])


def test_non_finite_loss_leaves_the_history_untouched():
  tx = mtl.dwa(2)
  step = _stepper(tx, 2)
  _, clean = _run(tx, 2, _PER_STEP[:2])
  updates, bad = step(clean, jnp.array([jnp.nan, 1.0]))
  assert np.all(np.isnan(updates))
  jax.tree.map(np.testing.assert_array_equal, bad, clean)
  # The next good step behaves as if the bad one never happened.
  updates, _ = step(bad, jnp.asarray(_PER_STEP[2]))
  np.testing.assert_allclose(updates, _by_hand([0.5, 0.75]), rtol=1e-6)


def test_one_backward_path_gives_the_same_update():
  state = assert_both_paths_agree(mtl.dwa(3, period=2), 3, num_steps=6)
  # Ratios were in use for two steps.
  assert int(state.weighting_state.periods_done) == 3


def test_bad_arguments_are_rejected():
  for period in (0, 2.0, True):
    with pytest.raises(ValueError, match='period'):
      mtl.dwa(2, period=period)
  with pytest.raises(ValueError, match='temperature'):
    mtl.dwa(2, temperature=0.0)
  with pytest.raises(ValueError, match='task_losses'):
    mtl.dwa(2).update(jnp.eye(2), mtl.dwa(2).init(None))
