"""task_tensioner: thesis §4.3 (eqs. 4.9–4.12, Algorithms 1–2), METHODS.md.

The expected values come from a step-by-step float64 NumPy reimplementation
written from the thesis and METHODS.md, in gradient space (vectors, not
weights), with base directions from the exhaustive KKT reference in
tests/min_norm_reference.py.
"""

import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import min_norm_reference as reference
import mtl_optax as mtl


# ---------------------------------------------------------------------------
# The float64 NumPy reimplementation.


def _numpy_base(grads, base):
  if callable(base):  # Any other base: its weights from the gradients.
    return base(grads)
  gram = grads @ grads.T
  if base == 'mgda':
    return reference.exhaustive(gram)[0]
  norms = np.linalg.norm(grads, axis=1)
  unit_weights = reference.exhaustive(gram / np.outer(norms, norms))[0]
  return (unit_weights / norms) / np.sum(unit_weights / norms)  # Eq. 4.7.


class NumpyTensioner:

  def __init__(self, num_tasks, base, alpha, period, loss_floor=1e-8):
    self.base, self.alpha, self.period = base, alpha, period
    self.loss_floor = loss_floor
    self.history = np.zeros((period, num_tasks))
    self.write_index, self.count = 0, 0
    self.previous_zeta = np.zeros(num_tasks)

  def step(self, grads, losses):
    grads = np.asarray(grads, np.float64)
    weights = _numpy_base(grads, self.base)
    direction = weights @ grads  # v.
    self.history[self.write_index] = np.linalg.norm(grads, axis=1)
    zeta = self.history.mean(axis=0)  # Eq. 4.9.
    if self.count >= self.period:  # Algorithm 1, line 8 (0-based i >= T).
      delta = zeta / self.previous_zeta + np.log10(
          np.maximum(losses, self.loss_floor))  # Eq. 4.10.
      factors = (self.alpha / (1 + np.exp(-delta * math.e + math.e))
                 + 1 - self.alpha)  # Eq. 4.11.
      tension = np.zeros_like(direction)
      largest = np.linalg.norm(grads, axis=1).max()
      for task in range(len(grads)):
        offset = grads[task] - direction
        # No tension from a task equal to v (to float32 resolution, as the
        # docstring states: ‖g_t − v‖ <= 1e-3 max‖g‖ ‖e_t − w‖₁).
        spread = np.abs(np.eye(len(grads))[task] - weights).sum()
        if np.linalg.norm(offset) > 1e-3 * largest * spread:
          tension += factors[task] * offset / np.linalg.norm(offset)  # 4.12.
      # Largest λ in [0, 1] with g_t · (v + λ u) >= 0 for every task.
      step = 1.0
      for grad in grads:
        if grad @ tension < 0:
          step = min(step, max(grad @ direction, 0.0) / -(grad @ tension))
      direction = direction + step * tension
    if self.count >= self.period - 1:
      self.previous_zeta = zeta
    self.write_index = (self.write_index + 1) % self.period
    self.count += 1
    return direction


def _sequence(num_tasks, num_steps, seed):
  """Gradients whose norms rise and fall at different rates, and losses."""
  rng = np.random.default_rng(seed)
  base = rng.normal(size=(num_tasks, 5))
  base[0] = -0.5 * base[1:].sum(axis=0) + 0.5 * base[0]
  grads, losses = [], []
  for step in range(num_steps):
    size = 1.0 + 0.5 * np.sin(0.7 * step * np.arange(1, num_tasks + 1))
    grads.append(base * size[:, None] + 0.1 * rng.normal(size=base.shape))
    losses.append(rng.uniform(0.05, 3.0, size=num_tasks))
  return np.asarray(grads, np.float32), np.asarray(losses, np.float32)


@functools.lru_cache(maxsize=None)
def _transformation(num_tasks, base='central_direction', alpha=0.3, period=4):
  # `base` is a string or a Weighting (a NamedTuple of functions: hashable).
  tx = mtl.task_tensioner(num_tasks, base=base, alpha=alpha, period=period)
  return tx, jax.jit(lambda g, s, l: tx.update(g, s, task_losses=l))


def _run(grads_sequence, losses_sequence, **kwargs):
  tx, update = _transformation(grads_sequence.shape[1], **kwargs)
  state = tx.init(None)
  updates, states = [], []
  for grads, losses in zip(grads_sequence, losses_sequence):
    step_updates, state = update(jnp.asarray(grads), state,
                                 jnp.asarray(losses))
    updates.append(np.asarray(step_updates, np.float64))
    states.append(state)
  return np.asarray(updates), states


# ---------------------------------------------------------------------------
# Tests.


@pytest.mark.parametrize('base', ['central_direction', 'mgda'])
def test_matches_numpy_step_by_step_over_more_than_a_period(base):
  period, num_steps = 4, 11  # The buffer wraps twice.
  grads, losses = _sequence(3, num_steps, seed=0)
  updates, states = _run(grads, losses, base=base, period=period)
  numpy_tensioner = NumpyTensioner(3, base, alpha=0.3, period=period)
  for step in range(num_steps):
    expected = numpy_tensioner.step(grads[step], losses[step])
    np.testing.assert_allclose(updates[step], expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max(),
                               err_msg=f'step {step}')
    # Rows are independent (3 tasks in 5 dimensions): the weights are the
    # unique coefficients of the expected update.
    expected_weights = np.linalg.lstsq(grads[step].T.astype(np.float64),
                                       expected, rcond=None)[0]
    np.testing.assert_allclose(states[step].weights, expected_weights,
                               rtol=1e-3, atol=1e-4, err_msg=f'step {step}')


def test_tension_starts_exactly_at_step_period():
  period, num_steps = 4, 7
  grads, losses = _sequence(3, num_steps, seed=1)
  tensioned, _ = _run(grads, losses, period=period)
  central_direction = mtl.central_direction(3)
  central_update = jax.jit(lambda g: central_direction.update(
      g, central_direction.init(None))[0])
  for step in range(num_steps):
    plain = np.asarray(central_update(jnp.asarray(grads[step])))
    if step < period:  # Buffer not yet full on a previous step: v itself.
      np.testing.assert_allclose(tensioned[step], plain, rtol=1e-6, atol=1e-7)
    else:
      assert np.linalg.norm(tensioned[step] - plain) > 1e-2, step


def test_ring_buffer_wraps_and_counters():
  period = 4
  grads, losses = _sequence(2, 6, seed=2)
  _, states = _run(grads, losses, period=period)
  norms = np.linalg.norm(grads.astype(np.float64), axis=2)
  final = states[-1].weighting_state
  # Steps 0..5 wrote rows 0, 1, 2, 3, 0, 1: rows 0-1 hold steps 4-5.
  np.testing.assert_allclose(final.norm_history,
                             norms[[4, 5, 2, 3]], rtol=1e-6)
  assert int(final.write_index) == 6 % period
  assert int(final.count) == 6
  # ζ of step 4 (the mean of steps 1..4) is the previous ζ after step 4.
  np.testing.assert_allclose(states[4].weighting_state.previous_zeta,
                             norms[1:5].mean(axis=0), rtol=1e-6)
  np.testing.assert_array_equal(states[1].weighting_state.previous_zeta,
                                0.0)  # Not full.
  for state in (state.weighting_state for state in states):
    assert state.norm_history.dtype == jnp.float32
    assert state.write_index.dtype == jnp.int32
    assert state.count.dtype == jnp.int32


@pytest.mark.parametrize('base', ['central_direction', 'mgda'])
def test_no_conflict_for_all_tasks_at_once_in_adversarial_cases(base):
  # Small gradients (unit tensions dominate v), few dimensions, very
  # different losses (very different c_t), period 1 (tension from step 1).
  tx, update = _transformation(4, base=base, period=1)
  constrained = 0
  for seed in range(25):
    rng = np.random.default_rng(seed)
    grads = (rng.normal(size=(4, 2)) * 10.0 ** rng.uniform(-3, 0, (4, 1)))
    losses = 10.0 ** rng.uniform(-4, 2, size=4)
    state = tx.init(None)
    for _ in range(2):
      updates, state = update(jnp.asarray(grads, jnp.float32), state,
                              jnp.asarray(losses, jnp.float32))
    grads64 = grads.astype(np.float32).astype(np.float64)
    alignment = grads64 @ np.asarray(updates, np.float64)
    # Rounding, plus the base direction's own slack: the min-norm solver
    # stops at a duality gap of tol · max_t ‖g_t‖² (tol = 1e-6), which bounds
    # how far below 0 a g_t · v can be when 0 is (nearly) in the hull.
    norms = np.linalg.norm(grads64, axis=1)
    tolerance = (1e-4 * norms * np.linalg.norm(np.asarray(updates, np.float64))
                 + 1e-6 * norms.max() ** 2)
    assert np.all(alignment >= -tolerance), (seed, alignment)
    # Count the cases where the unconstrained tension (λ = 1, the NumPy
    # reimplementation without its λ) conflicts with some task. Values are
    # not compared here: near 0 in the hull, λ = (g_t · v) / (−g_t · u) is as
    # sensitive as v is to the solver's tolerance.
    direction = _numpy_base(grads64, base) @ grads64
    delta = 1.0 + np.log10(losses)  # Same gradients twice: ζ ratio 1.
    factors = 0.3 / (1 + np.exp(-delta * math.e + math.e)) + 0.7
    offsets = grads64 - direction
    lengths = np.linalg.norm(offsets, axis=1)
    keep = lengths > 1e-6 * norms.max()
    full = direction + np.sum((factors * keep / np.maximum(lengths, 1e-300))
                              [:, None] * offsets, axis=0)
    constrained += int(np.any(grads64 @ full < -1e-9 * norms.max() ** 2))
  assert constrained >= 10, constrained  # The guarantee was exercised.


def test_defaults_are_the_thesis_values():
  parameters = inspect.signature(mtl.task_tensioner).parameters
  assert parameters['alpha'].default == 0.3  # Thesis §5.2: α = 0.3.
  assert parameters['period'].default == 10  # Thesis §5.2: T = 10.
  assert parameters['base'].default == 'central_direction'


def test_bad_losses_and_gradients_stay_finite_and_non_finite_steps_skip():
  tx, update = _transformation(3, period=1)
  grads, losses = _sequence(3, 3, seed=4)
  state = tx.init(None)
  updates, state = update(jnp.asarray(grads[0]), state, jnp.asarray(losses[0]))
  # Zero and negative losses have no log10: floored (finite tension).
  updates, state = update(jnp.asarray(grads[1]), state,
                          jnp.asarray([0.0, -1.0, 2.0]))
  assert np.all(np.isfinite(updates))
  # A zero gradient: finite, and it adds no conflict.
  zero_task = grads[2].copy()
  zero_task[1] = 0.0
  updates, zero_state = update(jnp.asarray(zero_task), state,
                               jnp.asarray(losses[2]))
  assert np.all(np.isfinite(updates)) and np.all(
      np.isfinite(zero_state.weighting_state.norm_history))
  assert np.all(zero_task.astype(np.float64) @ np.asarray(updates) >= -1e-5)
  # A NaN gradient: NaN update and the buffer left as it was.
  nan_grads = grads[2].copy()
  nan_grads[0, 0] = np.nan
  updates, nan_state = update(jnp.asarray(nan_grads), state,
                              jnp.asarray(losses[2]))
  assert not np.all(np.isfinite(updates))
  jax.tree.map(np.testing.assert_array_equal, nan_state, state)


def _check_against_numpy(base, numpy_base, seed, num_steps=11, period=4):
  grads, losses = _sequence(3, num_steps, seed=seed)
  updates, states = _run(grads, losses, base=base, period=period)
  numpy_tensioner = NumpyTensioner(3, numpy_base, alpha=0.3, period=period)
  for step in range(num_steps):
    expected = numpy_tensioner.step(grads[step], losses[step])
    np.testing.assert_allclose(updates[step], expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max(),
                               err_msg=f'step {step}')
  return states


def test_any_weighting_is_a_base():
  # The mean of the gradients (w = 1/3, a weighting that does not even read
  # the Gramian) as v, in the NumPy reimplementation too; v may conflict with
  # a task there, which then keeps its g_t · v.
  _check_against_numpy(mtl.weightings.equal_weighting(reduction='mean'),
                       lambda grads: np.full(len(grads), 1.0 / len(grads)),
                       seed=5)


def test_a_stateful_base_keeps_its_state_nested():
  # smoothed(mgda, ½): v's weights are ½ w_{k−1} + ½ (MGDA's weights of step
  # k), w_1 = MGDA's own; the NumPy reimplementation averages the KKT
  # reference's weights the same way.
  previous = []

  def numpy_smoothed_mgda(grads):
    current = reference.exhaustive(grads @ grads.T)[0]
    weights = current if not previous else 0.5 * previous[-1] + 0.5 * current
    previous.append(weights)
    return weights

  base = mtl.weightings.smoothed(mtl.weightings.mgda(), alpha=0.5)
  states = _check_against_numpy(base, numpy_smoothed_mgda, seed=6)
  base_state = states[-1].weighting_state.base_state
  assert int(base_state.count) == 11
  np.testing.assert_allclose(base_state.previous_weights, previous[-1],
                             rtol=1e-4, atol=1e-5)


def test_the_string_shortcut_is_the_weighting():
  grads, losses = _sequence(3, 6, seed=7)
  by_name, _ = _run(grads, losses, base='mgda')
  by_value, states = _run(grads, losses, base=mtl.weightings.mgda())
  np.testing.assert_array_equal(by_value, by_name)
  assert isinstance(states[0].weighting_state, mtl.TaskTensionerState)


def test_bad_arguments_are_rejected():
  with pytest.raises(ValueError, match='base must be one of'):
    mtl.task_tensioner(2, base=mtl.upgrad(2))  # A transformation.
  with pytest.raises(ValueError, match='base must be one of'):
    mtl.weightings.task_tensioner(base=3)
  with pytest.raises(ValueError, match='alpha'):
    mtl.task_tensioner(2, alpha=1.5)
  with pytest.raises(ValueError, match='period'):
    mtl.task_tensioner(2, period=0)
  with pytest.raises(ValueError, match='base'):
    mtl.task_tensioner(2, base='uniform')
  with pytest.raises(ValueError, match='losses'):
    tx = mtl.task_tensioner(2)
    tx.update(jnp.ones((2, 3)), tx.init(None))
