"""The native Gramian kernel, where it was built: every CPU core on ``J Jᵀ``.

On CPU, XLA runs a ``[T, n] x [n, T]`` product with T up to 32 on one
thread. ``native/gramian_kernel.cc`` splits the columns over the cores,
computes the upper triangle only and sums blocks in float64; setup.py builds
it as an optional extension, and this module loads it with ctypes and
registers it with XLA as an FFI target.

Where it is absent (the build failed, another platform) or disabled (the
environment variable ``MTL_OPTAX_NATIVE=0``), :func:`enabled` is False and
gramian.py computes the Gramian with XLA alone: the same values, up to
float32 rounding. The kernel takes float32 leaves only, unsharded, on a CPU
default backend; the rest always goes to XLA.
"""

import ctypes
import functools
import importlib.machinery
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mtl_optax._src import column_blocks

_LIBRARY_STEM = '_gramian_kernel'
_HANDLER = 'MtlOptaxGramian'
_TARGET = 'mtl_optax_gramian'
SWITCH = 'MTL_OPTAX_NATIVE'  # '0' turns the kernel off.


def load(folder: pathlib.Path) -> bool:
  """Loads the kernel built in ``folder`` and registers it with XLA.

  False, without an error, where there is none or it does not load.
  """
  for suffix in importlib.machinery.EXTENSION_SUFFIXES:
    path = folder / (_LIBRARY_STEM + suffix)
    if not path.is_file():
      continue
    try:
      handler = getattr(ctypes.CDLL(str(path)), _HANDLER)
      jax.ffi.register_ffi_target(
          _TARGET, jax.ffi.pycapsule(handler), platform='cpu')
    except (OSError, AttributeError, RuntimeError, ValueError):
      return False  # Built for another jaxlib or platform: XLA does it.
    return True
  return False


@functools.cache
def available() -> bool:
  """Whether the kernel was built here and XLA accepted it (asked once)."""
  return load(pathlib.Path(__file__).parent)


def enabled() -> bool:
  """Whether gramian.py hands float32 leaves to the kernel (read per trace)."""
  return os.environ.get(SWITCH, '1') != '0' and available()


def accepts(leaf: jax.Array) -> bool:
  """Whether the kernel takes ``leaf`` (when :func:`enabled`)."""
  return (leaf.dtype == jnp.float32 and leaf.ndim >= 1
          and column_blocks.unsharded_on_cpu(leaf))


def threads() -> int:
  """The cores this process may run on (its affinity mask, as XLA counts)."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


@jax.custom_jvp
def _kernel(*matrices: jax.Array) -> jax.Array:
  tasks = matrices[0].shape[0]
  call = jax.ffi.ffi_call(
      _TARGET, jax.ShapeDtypeStruct((tasks, tasks), jnp.float32),
      vmap_method='sequential')
  return call(*matrices, threads=np.int64(threads()))


@_kernel.defjvp
def _kernel_jvp(primals, tangents):
  # d(Σ J Jᵀ) = Σ (dJ Jᵀ + J dJᵀ) = D + Dᵀ with D = Σ dJ Jᵀ, in XLA.
  half = sum(
      lax.dot_general(tangent, primal, (((1,), (1,)), ((), ())),
                      precision=lax.Precision.HIGHEST,
                      preferred_element_type=jnp.float32)
      for primal, tangent in zip(primals, tangents))
  return _kernel(*primals), half + half.T


def gramian(leaves: list[jax.Array]) -> jax.Array:
  """``Σ_leaf J_leaf J_leafᵀ``, ``[T, T]`` float32, for leaves it accepts."""
  if not available():  # Registers the kernel on first use.
    raise RuntimeError('mtl_optax: the native Gramian kernel is not built here')
  return _kernel(*(leaf.reshape(leaf.shape[0], -1) for leaf in leaves))
