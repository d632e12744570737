"""Euclidean projection onto the probability simplex."""

import jax
import jax.numpy as jnp


def project_to_simplex(point: jax.Array) -> jax.Array:
  """``argmin_{w ∈ Δ} ‖w − point‖`` with ``Δ = {w >= 0, Σ_t w_t = 1}``.

  Sort and threshold (Held, Wolfe and Crowder, 1974): with ``u`` the entries
  in decreasing order, the support is the longest prefix on which
  ``u_k − (Σ_{i<=k} u_i − 1) / k > 0``, and the projection is
  ``max(point − θ, 0)`` with ``θ`` that prefix's ``(Σ u_i − 1) / k``. The
  first entry always qualifies, so the support is never empty. Permuting
  ``point`` permutes the projection; ``point`` must be finite.

  The projection does not change when a constant is added to every entry,
  so the largest entry is first moved to 0: the arithmetic then works on
  the gaps between entries, not on their (possibly huge) common offset.
  """
  num_tasks = point.shape[0]
  point = point - jnp.max(point)
  descending = jnp.sort(point)[::-1]
  excess = jnp.cumsum(descending) - 1.0
  counts = jnp.arange(1, num_tasks + 1, dtype=point.dtype)
  in_support = descending - excess / counts > 0
  # The condition holds on a prefix; at least the first entry is in it.
  support_size = jnp.maximum(jnp.sum(in_support), 1)
  threshold = excess[support_size - 1] / support_size.astype(point.dtype)
  return jnp.maximum(point - threshold, 0.0)
