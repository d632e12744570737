"""Per-task scaling of the Gramian: ``G[i, j] / (c_i c_j)``, written once.

Several methods solve their problem on the Gramian of rescaled gradients
``g_t / c_t``: MGDA's normalisations (``c_t = ‖g_t‖``, ``L_t``,
``L_t ‖g_t‖``), the central direction, IMTL-G, ConFIG, FairGrad and
Nash-MTL (the cosine matrix, ``c_t = ‖g_t‖``) and the hybrid IMTL
(``c_t = e^{-s_t}``). :func:`scale_gram` is that one operation.

**Zero-scale rule.** A task with ``c_t = 0`` (a zero gradient when
``c_t = ‖g_t‖``) has no rescaled gradient: its row and column of the result
are 0, so it adds nothing to any combination. Solvers that need a positive
definite matrix (``fair_allocation``) then put 1 on its diagonal, which
decouples it from the others; that is their own documented step.
"""

import jax
import jax.numpy as jnp

from mtl_optax._src import numerics


def task_norms(gram: jax.Array) -> jax.Array:
  """``[T]`` norms ``‖g_t‖ = sqrt(G_tt)`` in ``gram``'s own scale (0 if negative)."""
  return numerics.safe_sqrt(jnp.diagonal(gram))


def scale_gram(gram: jax.Array, scales: jax.Array) -> jax.Array:
  """``G[i, j] / (c_i c_j)``; a task with ``c_t = 0`` gets a zero row and column.

  The two divisions are applied one after the other (not by ``c_i c_j``),
  so for ``c = ‖g‖`` no intermediate leaves the range of ``G``'s own
  entries: ``|G_ij| / c_i <= ‖g_j‖``.

  Args:
    gram: ``[T, T]`` Gramian.
    scales: ``[T]`` non-negative ``c_t``.

  Returns:
    ``[T, T]`` Gramian of the rescaled gradients ``g_t / c_t``.
  """
  inverse = numerics.safe_div(jnp.ones_like(scales), scales)
  return (gram * inverse[:, None]) * inverse[None, :]


def cosine_gram(gram: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(Ĝ, n)``: ``Ĝ = scale_gram(G, n)`` with ``n = ‖g_t‖``, and ``n``.

  Entries are the cosines of the gradients' angles; a zero gradient has a
  zero row and column (the zero-scale rule).
  """
  norms = task_norms(gram)
  return scale_gram(gram, norms), norms
