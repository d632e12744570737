"""The blocked Gramian kernel: large unsharded leaves on CPU.

``gramian`` sums a large leaf's ``J Jᵀ`` over column blocks in a loop (see
gramian.py for the measured reason). These tests pin that path: the values
against a float64 NumPy reference, a leaf whose width is not a multiple of the
block, low precision, the over/underflow rescue on the blocked path, and the
compiled memory: no scaled copy of the stacked gradients is allocated.
Each test runs twice: with float32 leaves on the native kernel (where it was
built; test_native_gramian.py pins it apart) and with the kernel switched
off, as where it is absent: XLA's blocked loop then takes float32 too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_optax._src import column_blocks
from mtl_optax._src import native
from test_native_gramian import fresh_gramian

NUM_TASKS = 4
# 56 full blocks of 16400 float32 columns plus a tail of 1234: both code
# paths. Large enough (7 MiB in bfloat16) to be blocked (column_blocks.py).
WIDTH = 56 * 16400 + 1234


@pytest.fixture(autouse=True, params=['native kernel on', 'native kernel off'])
def _native_switch(request, monkeypatch):
  monkeypatch.setenv(native.SWITCH, '1' if request.param.endswith('on') else '0')


def gramian(task_grads):
  return fresh_gramian()(task_grads)


def _task_grads(dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(3), 2)
  return {'big': jax.random.normal(keys[0], (NUM_TASKS, WIDTH // 2, 2),
                                   dtype),
          'small': jax.random.normal(keys[1], (NUM_TASKS, 3), dtype)}


def _reference(task_grads):
  """float64 NumPy ``J Jᵀ`` of the concatenated leaves (independent)."""
  matrix = np.concatenate(
      [np.asarray(leaf, np.float64).reshape(NUM_TASKS, -1)
       for leaf in jax.tree.leaves(task_grads)], axis=1)
  return matrix @ matrix.T


def test_large_leaf_takes_the_blocked_path():
  grads = _task_grads()
  width = column_blocks.width(grads['big'])
  # 2^21 bytes / (4 tasks * 4 bytes), clipped to 16384, plus one 64-byte line.
  assert width == 16384 + 16
  # bfloat16: 32 columns make the 64-byte line.
  assert column_blocks.width(grads['big'].astype(jnp.bfloat16)) == 16384 + 32
  assert column_blocks.width(grads['small']) is None
  # Under 7 MiB the leaf stays in cache: one dot is faster.
  assert column_blocks.width(jnp.zeros((8, 200000))) is None


@pytest.mark.parametrize('dtype, rtol', [(jnp.float32, 1e-5),
                                         (jnp.bfloat16, 1e-5)])
def test_blocked_gramian_matches_float64_reference(dtype, rtol):
  grads = _task_grads(dtype)
  gram, scale = gramian(grads)
  assert gram.dtype == jnp.float32 and float(scale) == 1.0
  # bf16 inputs are exact in float64, and products accumulate in float32.
  np.testing.assert_allclose(np.asarray(gram), _reference(grads), rtol=rtol,
                             atol=rtol * NUM_TASKS * WIDTH)


@pytest.mark.parametrize('magnitude', [1e25, 1e-25])
def test_blocked_gramian_rescues_over_and_underflow(magnitude):
  grads = jax.tree.map(lambda leaf: leaf * magnitude, _task_grads())
  gram, scale = gramian(grads)
  # Float32 squares of 1e25 overflow and of 1e-25 flush to zero, so only the
  # rescaled path can give finite, non-zero values.
  expected = _reference(grads) / float(scale) ** 2
  assert np.all(np.isfinite(np.asarray(gram)))
  np.testing.assert_allclose(np.asarray(gram), expected, rtol=1e-5,
                             atol=1e-5 * np.abs(expected).max())
  assert np.log2(float(scale)) == np.round(np.log2(float(scale)))


def test_blocked_gramian_allocates_no_copy_of_the_gradients():
  grads = _task_grads()
  stacked_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(grads))
  analysis = fresh_gramian().lower(grads).compile().memory_analysis()
  # One block ([T, 16400] float32 = 256 KiB) and the tail, not T x P (14 MiB).
  assert analysis.temp_size_in_bytes < stacked_bytes / 2, (
      analysis.temp_size_in_bytes, stacked_bytes)

