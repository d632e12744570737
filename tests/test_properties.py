"""The property suite every public balancing method passes.

Methods come from ``mtl_optax/catalog.py``; a new method joins with one line
there. Everything runs under ``jax.jit``. To stay fast, each method is compiled
once per task count and the compiled update is reused across every input of
that shape.
"""

import fcntl
import functools
import inspect
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_optax as mtl
from mtl_optax.catalog import METHODS
from mtl_optax.catalog import MIN_NORM
from mtl_optax.catalog import NON_CONFLICTING
from mtl_optax.catalog import PERMUTATION_INVARIANT
from mtl_optax.catalog import SCALE_LINEAR
from mtl_optax.catalog import is_option

NUM_TASKS = 4


def _case(method):
  """One method as a test parameter.

  An option entry (``mgda.l2`` beside ``mgda``) runs in the full suite only,
  so the everyday subset (``-m "not slow"``) covers each method once.
  """
  return pytest.param(method, id=method.name,
                      marks=[pytest.mark.slow] if is_option(method) else [])


CASES = [_case(method) for method in METHODS]
# How a balancer composes with optax (MultiSteps, apply_if_finite, lax.cond,
# extra keyword arguments) depends on its state's structure, which an option
# does not change: those properties run once per method.
METHOD_CASES = [_case(method) for method in METHODS if not is_option(method)]


def _with(prop):
  return [_case(m) for m in METHODS if prop in m.properties]


# ---------------------------------------------------------------------------
# Fixtures: a two-leaf tree whose task axis is the rows of a [T, 8] matrix.


def _tree(matrix, dtype=jnp.float32):
  matrix = jnp.asarray(matrix, jnp.float32)
  num_tasks = matrix.shape[0]
  return {'w': matrix[:, :6].reshape(num_tasks, 3, 2).astype(dtype),
          'b': matrix[:, 6:].astype(dtype)}


def _flat(tree):
  """[T, 8] (or [8]) float64 matrix back from a tree."""
  w, b = np.asarray(tree['w'], np.float64), np.asarray(tree['b'], np.float64)
  lead = w.shape[:-2]
  return np.concatenate([w.reshape(lead + (6,)), b], axis=-1)


def _params(dtype=jnp.float32):
  return {'w': jnp.zeros((3, 2), dtype), 'b': jnp.zeros((2,), dtype)}


def _conflicting_matrix(num_tasks=NUM_TASKS, seed=0):
  """Random rows with pairwise conflicts (one task points against the rest)."""
  matrix = np.random.default_rng(seed).normal(size=(num_tasks, 8))
  matrix[0] = -0.8 * matrix[1:].sum(axis=0) + 0.3 * matrix[0]
  return matrix.astype(np.float32)


def _losses(num_tasks=NUM_TASKS, seed=0):
  return jnp.asarray(np.random.default_rng(seed + 100).uniform(
      0.3, 3.0, size=num_tasks), jnp.float32)


_BY_NAME = {method.name: method for method in METHODS}


def _compiled(method, num_tasks=NUM_TASKS):
  """``(tx, jitted update, initial state)`` for one method and task count."""
  return _compiled_by_name(method.name, num_tasks)


@functools.lru_cache(maxsize=None)
def _compiled_by_name(name, num_tasks):
  tx = _BY_NAME[name].make(num_tasks)
  update = jax.jit(lambda grads, state, losses: tx.update(
      grads, state, _params(), task_losses=losses))
  return tx, update, tx.init(_params())


def _run(method, matrix, losses=None, state=None):
  num_tasks = matrix.shape[0]
  _, update, init_state = _compiled(method, num_tasks)
  losses = _losses(num_tasks) if losses is None else losses
  state = init_state if state is None else state
  updates, new_state = update(_tree(matrix), state, losses)
  return _flat(updates), new_state


def _weights(state):
  """The last ``[T]`` weights, which every method reports (``last_weights``)."""
  return mtl.last_weights(state)


def _finite_tree(tree):
  return all(np.all(np.isfinite(np.asarray(leaf, np.float64)))
             for leaf in jax.tree.leaves(tree)
             if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating))


def _assert_same_tree(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(
      np.asarray(x), np.asarray(y)), a, b)


def _key_data(tree):
  """Typed PRNG keys become their raw data so trees compare as arrays."""
  return jax.tree.map(
      lambda x: jax.random.key_data(x)
      if jnp.issubdtype(jnp.asarray(x).dtype, jax.dtypes.prng_key) else x, tree)


# ---------------------------------------------------------------------------
# optax conventions.


@pytest.mark.parametrize('method', CASES)
def test_structure_shape_and_dtype_in_three_precisions(method):
  tx = method.make(NUM_TASKS)
  matrix = _conflicting_matrix()

  @jax.jit
  def all_dtypes(losses):
    out = {}
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
      state = tx.init(_params(dtype))
      out[dtype.__name__] = tx.update(_tree(matrix, dtype), state,
                                      _params(dtype), task_losses=losses)[0]
    return out

  for dtype_name, updates in all_dtypes(_losses()).items():
    assert jax.tree.structure(updates) == jax.tree.structure(_params())
    for leaf, param in zip(jax.tree.leaves(updates),
                           jax.tree.leaves(_params())):
      assert leaf.shape == param.shape
      assert leaf.dtype == jnp.dtype(dtype_name)
    assert _finite_tree(updates)


@pytest.mark.parametrize('method', CASES)
def test_no_retrace_and_state_is_stable(method):
  _, update, state = _compiled(method)
  matrix = _conflicting_matrix()
  _, state1 = update(_tree(matrix), state, _losses())
  _, state2 = update(_tree(2 * matrix), state1, 2 * _losses())
  assert update._cache_size() == 1
  for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(state2)):
    assert jnp.shape(before) == jnp.shape(after)
    assert jnp.asarray(before).dtype == jnp.asarray(after).dtype
  assert jnp.shape(_weights(state2)) == (NUM_TASKS,)
  assert _weights(state2).dtype == jnp.float32


@pytest.mark.slow
@pytest.mark.parametrize('method', METHOD_CASES)
def test_state_passes_through_both_branches_of_a_cond(method):
  tx, update, state = _compiled(method)
  matrix = _conflicting_matrix()
  _, state1 = update(_tree(matrix), state, _losses())

  # Returning the state from both branches of a lax.cond compiles only if
  # its structure, shapes and dtypes do not depend on the step.
  @jax.jit
  def maybe_step(predicate, state):
    return jax.lax.cond(
        predicate,
        lambda s: tx.update(_tree(matrix), s, _params(),
                            task_losses=_losses())[1],
        lambda s: s, state)

  _assert_same_tree(_key_data(maybe_step(False, state1)), _key_data(state1))


@pytest.mark.slow
@pytest.mark.parametrize('method', METHOD_CASES)
def test_unknown_extra_args_are_ignored(method):
  tx, _, state = _compiled(method)
  matrix = _conflicting_matrix()
  # Inputs and outputs as in _run: the two programs differ only in the
  # ignored keywords, so their results must be bit-identical.
  extra = jax.jit(lambda g, s, l: tx.update(g, s, _params(), task_losses=l,
                                            value=l.sum(), step=3))
  updates, _ = extra(_tree(matrix), state, _losses())
  np.testing.assert_array_equal(_flat(updates), _run(method, matrix)[0])


def _static_args(method):
  """The factory arguments inject_hyperparams must leave alone: non-floats."""
  signature = inspect.signature(method.factory)
  static = {'num_tasks'} | set(method.static_args)
  bound = {name: p.default for name, p in signature.parameters.items()}
  bound.update(method.kwargs)
  for name, value in bound.items():
    is_float = isinstance(value, float) and not isinstance(value, bool)
    if name in signature.parameters and not is_float:
      static.add(name)
  return tuple(sorted(static & set(signature.parameters)))


@pytest.mark.slow
@pytest.mark.parametrize('method', CASES)
def test_float_hyperparameters_work_under_inject_hyperparams(method):
  injected = optax.inject_hyperparams(
      method.factory, static_args=_static_args(method))(NUM_TASKS,
                                                        **method.kwargs)
  state = injected.init(_params())
  matrix = _conflicting_matrix()
  updates, _ = jax.jit(lambda g, s, l: injected.update(
      g, s, _params(), task_losses=l))(_tree(matrix), state, _losses())
  expected, _ = _run(method, matrix)
  np.testing.assert_allclose(_flat(updates), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('method', METHOD_CASES)
def test_composes_with_multisteps_after_the_balancer(method):
  tx = optax.chain(method.make(NUM_TASKS),
                   optax.MultiSteps(optax.sgd(1.0),
                                    every_k_schedule=2).gradient_transformation())
  state = tx.init(_params())
  step = jax.jit(lambda g, s, l: tx.update(g, s, _params(), task_losses=l))
  first_matrix, second_matrix = _conflicting_matrix(seed=1), _conflicting_matrix(seed=2)
  skipped, state = step(_tree(first_matrix), state, _losses(seed=1))
  applied, state = step(_tree(second_matrix), state, _losses(seed=2))
  np.testing.assert_array_equal(_flat(skipped), 0.0)
  # The balancer's own outputs for the same two steps, averaged by MultiSteps.
  first, balancer_state = _run(method, first_matrix, _losses(seed=1))
  second, _ = _run(method, second_matrix, _losses(seed=2), balancer_state)
  np.testing.assert_allclose(_flat(applied), -(first + second) / 2,
                             rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Method properties, where the method promises them (README method table).


@pytest.mark.parametrize('method', _with(NON_CONFLICTING))
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_non_conflicting(method, seed):
  matrix = _conflicting_matrix(seed=seed)
  update, _ = _run(method, matrix, _losses(seed=seed))
  alignment = matrix.astype(np.float64) @ update
  tolerance = 1e-4 * np.linalg.norm(matrix, axis=1) * np.linalg.norm(update)
  assert np.all(alignment >= -tolerance), alignment


@pytest.mark.parametrize('method', _with(PERMUTATION_INVARIANT))
def test_permutation_invariant(method):
  matrix, losses = _conflicting_matrix(), _losses()
  permutation = np.array([2, 0, 3, 1])
  update, state = _run(method, matrix, losses)
  permuted_update, permuted_state = _run(method, matrix[permutation],
                                         losses[permutation])
  np.testing.assert_allclose(permuted_update, update, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(_weights(permuted_state),
                             np.asarray(_weights(state))[permutation],
                             rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('method', _with(SCALE_LINEAR))
@pytest.mark.parametrize('factor', [1e-3, 7.0])
def test_linear_under_scaling(method, factor):
  matrix, losses = _conflicting_matrix(), _losses()
  update, _ = _run(method, matrix, losses)
  scaled_update, _ = _run(method, factor * matrix, losses)
  # Entrywise error relative to the whole vector: entries that cancel to
  # near zero carry float32 round-off of the size of the largest terms.
  np.testing.assert_allclose(scaled_update, factor * update, rtol=1e-4,
                             atol=1e-4 * np.abs(factor * update).max())


@pytest.mark.parametrize('method', _with(MIN_NORM))
def test_min_norm_kkt(method):
  matrix = _conflicting_matrix().astype(np.float64)
  _, state = _run(method, matrix.astype(np.float32))
  weights = np.asarray(_weights(state), np.float64)
  gram = matrix @ matrix.T
  # KKT of min_{w in simplex} wᵀGw: w >= 0, sum 1, (Gw)_t >= wᵀGw for all t,
  # with equality where w_t > 0.
  np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-5)
  assert np.all(weights >= -1e-7)
  gradient, value = gram @ weights, weights @ gram @ weights
  scale = np.trace(gram)
  assert np.all(gradient >= value - 1e-4 * scale)
  support = weights > 1e-4
  np.testing.assert_allclose(gradient[support], value, atol=1e-4 * scale)


# ---------------------------------------------------------------------------
# Bad inputs: the update is finite and the state stays finite.


def _bad_gradients():
  base = _conflicting_matrix()
  one_zero = base.copy()
  one_zero[2] = 0.0
  direction = base[1]
  collinear = np.stack([direction * c for c in (1.0, 2.0, 0.5, 3.0)])
  opposite = np.stack([direction, -direction, direction, -direction])
  low_rank = np.outer([1.0, -2.0, 0.5, 1.5], direction) + np.outer(
      [0.3, 0.1, -1.0, 0.2], base[3])
  spread = base * np.array([1e-8, 1e-3, 1e3, 1e8])[:, None]
  return {
      'one_task_zero': one_zero,
      'all_zero': np.zeros_like(base),
      'collinear': collinear,
      'exactly_opposite': opposite,
      'rank_two': low_rank,
      'scales_1e-8_to_1e8': spread,
      'tree_at_1e-20': base * 1e-20,
      'tree_at_1e20': base * 1e20,
  }


@pytest.mark.parametrize('method', CASES)
def test_bad_gradients_give_finite_updates_and_states(method):
  for name, matrix in _bad_gradients().items():
    update, state = _run(method, matrix.astype(np.float32))
    assert np.all(np.isfinite(update)), name
    assert _finite_tree(state), name
    # A second step from that state is still finite.
    update, state = _run(method, _conflicting_matrix(), state=state)
    assert np.all(np.isfinite(update)) and _finite_tree(state), name


@pytest.mark.parametrize('method', [c for c in CASES if c.values[0].needs_losses])
def test_degenerate_losses_give_finite_updates(method):
  matrix = _conflicting_matrix()
  for losses in ([0.0, 1.0, 2.0, 3.0], [1e-12, 1.0, 1e-12, 2.0],
                 [-1.0, 2.0, -0.5, 1.0], [0.0, 0.0, 0.0, 0.0]):
    update, state = _run(method, matrix, jnp.asarray(losses, jnp.float32))
    assert np.all(np.isfinite(update)), losses
    assert _finite_tree(state), losses


# T = 1 for every entry; T = 512 (slow) once per method: an option changes
# the small T x T problem, not how the method scales with T.
EXTREME_CASES = [
    pytest.param(case.values[0], 1, id=f'1-{case.id}', marks=case.marks)
    for case in CASES] + [
        pytest.param(case.values[0], 512, id=f'512-{case.id}',
                     marks=[pytest.mark.slow]) for case in METHOD_CASES]


@pytest.mark.parametrize('method, num_tasks', EXTREME_CASES)
def test_extreme_task_counts(method, num_tasks):
  # The fewest tasks a method accepts (Krum needs f + 3); fewer are rejected.
  num_tasks = max(num_tasks, method.min_tasks)
  matrix = _conflicting_matrix(num_tasks=num_tasks) if num_tasks > 1 else (
      np.random.default_rng(0).normal(size=(1, 8)).astype(np.float32))
  update, state = _run(method, matrix)
  assert np.all(np.isfinite(update)) and _finite_tree(state)
  assert _weights(state).shape == (num_tasks,)
  if num_tasks == 1 and NON_CONFLICTING in method.properties:
    assert matrix[0].astype(np.float64) @ update >= 0


# ---------------------------------------------------------------------------
# Non-finite inputs: a non-finite update (so apply_if_finite skips) and the
# state left exactly as it was.


def _non_finite_inputs():
  matrix, losses = _conflicting_matrix(seed=5), _losses(seed=5)
  nan_grad, inf_grad = matrix.copy(), matrix.copy()
  nan_grad[1, 3] = np.nan
  inf_grad[3, 0] = np.inf
  return {
      'nan_gradient': (nan_grad, losses),
      'inf_gradient': (inf_grad, losses),
      'nan_loss': (matrix, losses.at[2].set(jnp.nan)),
      'inf_loss': (matrix, losses.at[0].set(jnp.inf)),
  }


@pytest.mark.parametrize('method', CASES)
def test_non_finite_input_skips_and_leaves_state_untouched(method):
  good1, good2 = _conflicting_matrix(seed=3), _conflicting_matrix(seed=4)
  _, state1 = _run(method, good1, _losses(seed=3))
  expected_update, expected_state = _run(method, good2, _losses(seed=4), state1)
  for name, (matrix, losses) in _non_finite_inputs().items():
    bad_update, bad_state = _run(method, matrix, losses, state1)
    assert not np.all(np.isfinite(bad_update)), name
    _assert_same_tree(_key_data(bad_state), _key_data(state1))
    update, state = _run(method, good2, _losses(seed=4), bad_state)
    np.testing.assert_array_equal(update, expected_update)
    _assert_same_tree(_key_data(state), _key_data(expected_state))


@pytest.mark.slow
@pytest.mark.parametrize('method', METHOD_CASES)
def test_apply_if_finite_after_the_balancer_skips_bad_steps(method):
  tx = optax.chain(method.make(NUM_TASKS),
                   optax.apply_if_finite(optax.sgd(1.0), max_consecutive_errors=3))
  step = jax.jit(lambda g, s, l: tx.update(g, s, _params(), task_losses=l))
  state = tx.init(_params())
  matrix, losses = _non_finite_inputs()['nan_gradient']
  updates, new_state = step(_tree(matrix), state, losses)
  np.testing.assert_array_equal(_flat(updates), 0.0)
  assert int(new_state[1].notfinite_count) == 1
  _assert_same_tree(_key_data(new_state[0]), _key_data(state[0]))


@pytest.mark.slow
@pytest.mark.parametrize('method', CASES)
def test_guarded_divisions_have_finite_derivatives(method):
  """Forward-mode derivatives (they pass through solver loops) at a zero-norm
  task and a zero loss, where an unguarded division would give NaN."""
  tx, _, state = _compiled(method)
  matrix = _conflicting_matrix()
  matrix[2] = 0.0
  losses = _losses().at[1].set(0.0)

  def update_of(matrix, losses):
    return tx.update(_tree(matrix), state, _params(), task_losses=losses)[0]

  tangents = (jnp.ones_like(matrix), jnp.ones_like(losses))
  _, derivative = jax.jit(lambda m, l: jax.jvp(update_of, (m, l), tangents))(
      jnp.asarray(matrix), losses)
  assert _finite_tree(derivative)


# ---------------------------------------------------------------------------
# Construction.


@pytest.mark.parametrize('method', CASES)
def test_invalid_num_tasks_is_rejected(method):
  for bad in (0, -1, 2.5):
    with pytest.raises(ValueError, match='num_tasks'):
      method.make(bad)


@pytest.mark.parametrize('method', [c for c in CASES
                                    if c.values[0].min_tasks > 1])
def test_too_few_tasks_is_rejected_at_construction(method):
  with pytest.raises(ValueError, match='num_tasks'):
    method.make(method.min_tasks - 1)


# ---------------------------------------------------------------------------
# dtypes beyond float32: x64, and non-float gradients.


def _run_x64_check() -> str:
  """Every method run once under ``jax_enable_x64``, in its own process."""
  here = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [here, os.environ.get('PYTHONPATH', '')]))
  completed = subprocess.run(
      [sys.executable, os.path.join(here, 'x64_check.py')], env=env,
      capture_output=True, text=True, timeout=900, check=False)
  assert completed.returncode == 0, completed.stderr[-2000:]
  return completed.stdout


@pytest.fixture(scope='session')
def x64_report(tmp_path_factory):
  """The x64 check's report, run once per test session.

  pytest-xdist's workers share their session's temporary folder: the first
  worker runs the check (half a minute) under a file lock, the others read
  its report.
  """
  folder = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    folder = folder.parent
  report = folder / 'x64_report.json'
  with open(folder / 'x64_report.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not report.exists():
      report.write_text(_run_x64_check())
  return json.loads(report.read_text())


@pytest.mark.slow
@pytest.mark.parametrize('method', CASES)
def test_float64_in_float64_out_with_x64(method, x64_report):
  """With x64 enabled, float64 gradients give float64 updates, close to f32."""
  assert x64_report[method.name] == 'ok'


@pytest.mark.parametrize('dtype', [jnp.int32, jnp.bool_])
@pytest.mark.parametrize('method', CASES)
def test_integer_or_boolean_gradients_raise_naming_the_dtype(method, dtype):
  tx = method.make(NUM_TASKS)
  grads = {'w': jnp.ones((NUM_TASKS, 3, 2), dtype),
           'b': jnp.ones((NUM_TASKS, 2), jnp.float32)}
  with pytest.raises(ValueError, match=jnp.dtype(dtype).name):
    tx.update(grads, tx.init(_params()), _params(), task_losses=_losses())
