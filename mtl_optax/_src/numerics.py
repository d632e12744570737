"""Guarded arithmetic shared by every method.

Divisions by a norm or a loss use the double-``where`` pattern: the unsafe
denominator is replaced *before* the division, so neither the value nor its
derivative is NaN where the guard is active.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


def safe_div(numerator: jax.Array | float, denominator: jax.Array,
             fallback: float | jax.Array = 0.0) -> jax.Array:
  """``numerator / denominator``, or ``fallback`` where the denominator is 0."""
  is_zero = denominator == 0
  safe_denominator = jnp.where(is_zero, 1.0, denominator)
  return jnp.where(is_zero, fallback, numerator / safe_denominator)


def safe_sqrt(x: jax.Array) -> jax.Array:
  """``sqrt(max(x, 0))`` with a zero (not infinite) derivative at 0."""
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def floor_losses(task_losses: jax.Array, floor: float | jax.Array) -> jax.Array:
  """Losses clipped from below at ``floor`` > 0, so a log or a division is safe.

  A zero or negative loss has no logarithm; log-based methods treat it as
  ``floor`` instead, which keeps every weight finite.
  """
  return jnp.maximum(task_losses.astype(jnp.float32), floor)


def all_finite(*arrays: jax.Array | None) -> jax.Array:
  """True when every entry of every array is finite.

  One sum per array: ``0 · x`` is 0 for a finite ``x`` and NaN for ±inf or
  NaN, so ``Σ 0 · a`` is finite exactly when every entry of ``a`` is. On CPU
  that is about twice as fast as ``all(isfinite(a))`` (measured on
  ``[8, 1e6]`` float32: 0.7 against 1.6 ms), which writes out a mask first.
  The zero passes an optimization barrier, so XLA cannot fold the product.
  """
  zero = lax.optimization_barrier(jnp.zeros((), jnp.float32))
  given = [jnp.asarray(a) for a in arrays if a is not None]
  checks = [jnp.isfinite(jnp.sum(a * zero.astype(a.dtype)))
            for a in given if jnp.issubdtype(a.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def where_finite(finite: jax.Array, new_tree, old_tree):
  """``new_tree`` if ``finite`` else ``old_tree``, leaf by leaf (a state guard)."""
  return jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                      new_tree, old_tree)


def as_raw_key(key: Any) -> jax.Array:
  """A ``uint32[2]`` PRNG key from an int seed, a raw key or a typed key.

  Random methods keep their key in the optax state in this raw form, so the
  state is a plain array that ``where_finite`` and ``lax.cond`` handle.
  """
  key = key if isinstance(key, jax.Array) else jnp.asarray(key)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  if jnp.ndim(key) == 0:
    return jax.random.PRNGKey(key)
  return key.astype(jnp.uint32)


def power_of_two_near(largest: jax.Array) -> jax.Array:
  """An exact power of two within √2 of each entry of ``largest``.

  Dividing by it is exact and brings ``largest`` into ``[0.7, 1.4]``; it is 1
  where an entry is 0 or not finite. frexp/ldexp give an exact power of two
  (exp2 is approximate on CPU).
  """
  mantissa, exponent = jnp.frexp(largest)
  one = jnp.ones_like(largest)
  scales = jnp.ldexp(one, exponent - (mantissa < 0.7071).astype(exponent.dtype))
  return jnp.where((largest > 0) & jnp.isfinite(largest), scales, one)
