"""The native Gramian kernel (mtl_optax/_src/native/gramian_kernel.cc).

Its values are pinned against the plain float64 product ``J @ J.T`` of NumPy
(the reference), on shapes that reach every code path of the kernel: task
counts that are not a multiple of its 4-row tiles, widths that are not a
multiple of its 16-float vectors or of its column blocks, several leaves in
one call, any number of threads. Then what surrounds it: float32 leaves only,
the fallback to XLA where it is absent or switched off, derivatives, vmap.
"""

import os
import pathlib
import platform
import shutil
import sysconfig

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_optax as mtl
from mtl_optax._src import native


def _reference(leaves):
  """float64 ``J @ J.T`` of the leaves laid side by side."""
  matrix = np.concatenate(
      [np.asarray(leaf, np.float64).reshape(leaf.shape[0], -1)
       for leaf in leaves], axis=1)
  return matrix @ matrix.T


def _leaves(num_tasks, widths, seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((num_tasks, width)).astype(dtype)
          for width in widths]


def fresh_gramian():
  """``jax.jit(mtl.gramian)`` as a new function: jit never reuses a trace
  made under another switch or thread count (test_gramian_blocked.py too)."""
  return jax.jit(lambda grads: mtl.gramian(grads))


def _gramian(task_grads):
  return fresh_gramian()(task_grads)


def _uses_kernel(task_grads):
  return 'ffi_call' in str(jax.make_jaxpr(mtl.gramian)(task_grads))


def test_kernel_is_built_wherever_setup_py_can_build_it():
  # setup.py compiles it on x86-64 Linux with a C++17 compiler; the install
  # goes on silently if that fails, so this test is what notices.
  buildable = (platform.system() == 'Linux'
               and platform.machine() == 'x86_64'
               and shutil.which((sysconfig.get_config_var('CXX') or 'c++').split()[0])
               is not None)
  assert native.available() == buildable


needs_kernel = pytest.mark.skipif(
    not native.available(), reason='the native kernel was not built here')


@needs_kernel
@pytest.mark.parametrize('num_tasks', [1, 3, 4, 5, 8, 33])
@pytest.mark.parametrize('widths', [
    [1], [15], [16], [1000],  # Less than a vector, one, many.
    [16384 * 2 + 37],  # Two column blocks and a tail (any T <= 16).
    [7, 40000, 129],  # Several leaves in one call.
])
def test_kernel_matches_float64_product(num_tasks, widths):
  leaves = _leaves(num_tasks, widths, seed=num_tasks)
  gram = native.gramian([jnp.asarray(leaf) for leaf in leaves])
  reference = _reference(leaves)
  # Blocks summed in float64, then rounded once to float32.
  np.testing.assert_allclose(np.asarray(gram), reference, rtol=2e-6,
                             atol=2e-6 * np.abs(reference).max())
  np.testing.assert_array_equal(np.asarray(gram), np.asarray(gram).T)


@needs_kernel
@pytest.mark.parametrize('threads', [1, 2, 3, 64])
def test_any_thread_count_gives_the_same_gramian(monkeypatch, threads):
  # 61 column blocks of 1024 columns at T = 256: more blocks than threads,
  # and a last thread with fewer.
  leaves = [jnp.asarray(leaf) for leaf in _leaves(256, [61 * 1024 - 5])]
  monkeypatch.setattr(native, 'threads', lambda: threads)
  gram = jax.jit(lambda *ls: native.gramian(list(ls)))(*leaves)
  reference = _reference(leaves)
  np.testing.assert_allclose(np.asarray(gram), reference, rtol=2e-6,
                             atol=2e-6 * np.abs(reference).max())


@needs_kernel
def test_public_gramian_sends_float32_leaves_to_the_kernel():
  grads = {'w': jnp.asarray(_leaves(6, [3000])[0]).reshape(6, 30, 100),
           'b': jnp.asarray(_leaves(6, [10], seed=1)[0]),
           'bf16': jnp.asarray(_leaves(6, [64], seed=2)[0], jnp.bfloat16)}
  assert _uses_kernel(grads)
  gram, scale = _gramian(grads)
  assert float(scale) == 1.0
  np.testing.assert_allclose(np.asarray(gram),
                             _reference(jax.tree.leaves(grads)), rtol=2e-6,
                             atol=1e-3)
  # A tree of bfloat16 leaves only never calls it.
  assert not _uses_kernel({'bf16': grads['bf16']})


@needs_kernel
def test_switched_off_gives_xla_the_same_product(monkeypatch):
  grads = {'w': jnp.asarray(_leaves(5, [70000])[0])}
  with_kernel, _ = _gramian(grads)
  monkeypatch.setenv(native.SWITCH, '0')
  assert not _uses_kernel(grads)
  without, _ = _gramian(grads)
  np.testing.assert_allclose(np.asarray(with_kernel), np.asarray(without),
                             rtol=2e-5)


def test_absent_kernel_falls_back_to_xla(monkeypatch, tmp_path):
  # No library, or a file that is not one: no error, just False.
  assert not native.load(tmp_path)
  suffix = os.path.basename(sysconfig.get_config_var('EXT_SUFFIX'))
  (tmp_path / ('_gramian_kernel' + suffix)).write_bytes(b'not a library')
  assert not native.load(pathlib.Path(tmp_path))
  monkeypatch.setattr(native, 'available', lambda: False)
  grads = {'w': jnp.asarray(_leaves(3, [50000])[0])}
  assert not _uses_kernel(grads)
  gram, _ = _gramian(grads)
  np.testing.assert_allclose(np.asarray(gram), _reference([grads['w']]),
                             rtol=1e-5)


@needs_kernel
def test_derivatives_and_vmap_through_the_kernel():
  leaves = [jnp.asarray(leaf) for leaf in _leaves(3, [40, 1000])]
  tangents = [jnp.asarray(leaf) for leaf in _leaves(3, [40, 1000], seed=9)]
  gram, dgram = jax.jvp(lambda *ls: native.gramian(list(ls)), leaves,
                        tangents)
  matrix = np.concatenate([np.asarray(x, np.float64) for x in leaves], 1)
  dmatrix = np.concatenate([np.asarray(x, np.float64) for x in tangents], 1)
  # d(J Jᵀ) = dJ Jᵀ + J dJᵀ, by hand.
  np.testing.assert_allclose(np.asarray(dgram),
                             dmatrix @ matrix.T + matrix @ dmatrix.T,
                             rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(np.asarray(gram), matrix @ matrix.T, rtol=2e-6)
  # Reverse mode: d/dJ Σ (J Jᵀ) = 2 (1 1ᵀ) J, by hand.
  grad = jax.grad(lambda m: native.gramian([m]).sum())(leaves[0])
  np.testing.assert_allclose(
      np.asarray(grad), 2 * np.ones((3, 3)) @ np.asarray(leaves[0]),
      rtol=1e-5)
  batch = jnp.stack([leaves[1], 2 * leaves[1]])
  batched = jax.vmap(lambda m: native.gramian([m]))(batch)
  np.testing.assert_allclose(np.asarray(batched[1]),
                             4 * np.asarray(batched[0]), rtol=1e-6)


@needs_kernel
def test_non_finite_entry_gives_non_finite_gramian():
  leaf = _leaves(4, [5000])[0]
  leaf[2, 1234] = np.inf
  gram, scale = _gramian({'w': jnp.asarray(leaf)})
  assert not np.isfinite(float(scale)) or not np.all(np.isfinite(gram))
  raw = np.asarray(native.gramian([jnp.asarray(leaf)]))
  assert np.isinf(raw[2, 2]) and np.all(np.isfinite(raw[:2, :2]))
