"""benchmarks/bench_end_to_end.py: its quick table without torch, and that
its two training steps of ours (stacked, engine) are the same training."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks'
if str(BENCHMARKS) not in sys.path:  # The section imports `common`.
  sys.path.insert(0, str(BENCHMARKS))

import bench_end_to_end  # noqa: E402  pylint: disable=g-import-not-at-top


def test_quick_table_without_torch(monkeypatch):
  # As without the bench extra, whatever this environment has installed.
  monkeypatch.setattr(bench_end_to_end.common, 'installed',
                      lambda *names: False)
  # Two of the five methods: every method compiles two steps, and this test
  # is about the table's shape.
  tables = bench_end_to_end.run(quick=True, methods=['mean', 'upgrad'])

  assert len(tables) == 1
  table = tables[0]
  assert table['columns'] == [
      'method', 'ours stacked ms', 'ours engine ms', 'TorchJD autojac ms',
      'TorchJD autogram ms', 'stacked / autojac', 'engine / autojac',
      'ours stacked MiB', 'ours engine MiB', 'autojac RSS Δ MiB',
      'autogram RSS Δ MiB']
  assert [row[0] for row in table['rows']] == ['Mean (equal weighting)',
                                               'UPGrad']
  missing = 'torch/torchjd not installed'
  for row in table['rows']:
    assert len(row) == len(table['columns'])
    stacked_ms, engine_ms, stacked_mib, engine_mib = (row[1], row[2], row[7],
                                                      row[8])
    assert min(stacked_ms, engine_ms, stacked_mib, engine_mib) > 0, row
    assert row[3] == row[4] == row[9] == row[10] == missing
    assert row[5] is None and row[6] is None  # No ratio without a peer.
  assert 'torch or torchjd is not installed' in table['notes']
  assert 'LibMTL: not timed' in table['notes']


def test_stacked_and_engine_steps_train_alike():
  """Equal weighting (mean): both paths give Adam the mean-loss gradient.

  They differ only in float32 summation order (T pulled-back gradients
  averaged, or one pull-back of the averaged cotangent), a few ulps per
  gradient entry. Adam divides each entry by its own root mean square, so
  the update keeps that relative error (it is amplified only where
  |g| ≲ eps = 1e-8, absent here), and the parameters, of size about 1 and
  moved by lr = 1e-3 per step, agree to well under 1e-6 after three steps.
  """
  model = bench_end_to_end.Model('tiny', 'mlp', 3, 8, 5, 6, 2)
  params, x, y = bench_end_to_end.init(model)
  trained = []
  for make in (bench_end_to_end.stacked_step, bench_end_to_end.engine_step):
    step, init_state = make(model, 'mean')
    step = jax.jit(step)
    current, state = params, init_state(params)
    for _ in range(3):
      current, state, losses = step(current, state, x, y)
    trained.append((current, losses))

  (stacked, stacked_losses), (engine, engine_losses) = trained
  np.testing.assert_allclose(engine_losses, stacked_losses, rtol=1e-6)
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(a - b)),
                                       stacked, params))
  assert min(moved) > 1e-4  # Every leaf trained (3 steps of about lr).
  for leaf, expected in zip(jax.tree.leaves(engine),
                            jax.tree.leaves(stacked)):
    np.testing.assert_allclose(leaf, expected, rtol=0, atol=1e-6)


def test_max_pool_is_reduce_window_max_pool():
  """The conv model's pooling (a max over reshaped axes) is 2 x 2 max
  pooling: the values and gradients of ``lax.reduce_window``'s max pool
  (``flax.linen.max_pool``), on a ReLU output as in the model. Random inputs
  have no ties among their positive entries; the zeros the ReLU leaves do
  tie, and there both gradients reach the ReLU where its own derivative is 0.
  """
  x = jax.random.normal(jax.random.key(0), (3, 6, 4, 5))
  cotangent = jax.random.normal(jax.random.key(1), (3, 3, 2, 5))

  def reduce_window_pool(x):
    return jax.lax.reduce_window(x, -np.inf, jax.lax.max, (1, 2, 2, 1),
                                 (1, 2, 2, 1), 'VALID')

  def pooled_relu(pool):
    return lambda x: jnp.vdot(pool(jax.nn.relu(x)), cotangent)

  np.testing.assert_array_equal(bench_end_to_end._max_pool(x),
                                reduce_window_pool(x))
  np.testing.assert_array_equal(
      jax.grad(pooled_relu(bench_end_to_end._max_pool))(x),
      jax.grad(pooled_relu(reduce_window_pool))(x))
