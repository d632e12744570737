r"""A small linear program in standard form, by the simplex method, compiled.

``max_x cᵀx  s.t.  A x = b,  x >= 0``  (A: m x n, m <= n),

started from a feasible basis the caller gives (m column indices whose
square matrix ``B = A[:, basis]`` is invertible and has ``B⁻¹b >= 0``), so
no first phase is needed. Each step is one pivot of the dense tableau
``[B⁻¹A | B⁻¹b]`` with its row of reduced costs: the entering column is the
first with a positive reduced cost and the leaving row the one of least
ratio ``(B⁻¹b)_r / (B⁻¹A)_rj``, ties to the smallest basic index (Bland's
rule, so degenerate vertices cannot cycle and the method ends after
finitely many pivots). A column whose entries are all <= 0 would make the
program unbounded: the loop stops there (the callers' programs are
bounded). At the end the basic values are solved once more from ``A`` and
``b`` to remove the tableau's accumulated rounding.

A pivot costs O(m n); it is ``lax.while_loop`` and ``jnp.where`` only.
"""

import jax
import jax.numpy as jnp
from jax import lax

from mtl_optax._src.solvers.result import SolverResult


def solve(
    matrix: jax.Array,
    rhs: jax.Array,
    objective: jax.Array,
    basis: jax.Array,
    *,
    max_iters: int,
    tol: float = 1e-6,
) -> SolverResult:
  """``argmax cᵀx`` over ``{A x = b, x >= 0}`` from a feasible basis.

  Args:
    matrix: ``[m, n]`` constraint matrix ``A``, scaled so that its entries
      are of order 1 (``tol`` is absolute).
    rhs: ``[m]`` right-hand side ``b``.
    objective: ``[n]`` ``c``.
    basis: ``[m]`` int32, the columns of a feasible starting basis.
    max_iters: Python int >= 1, cap on the pivots.
    tol: a reduced cost must exceed it for its column to enter, and a
      column entry must exceed it to bound the step.

  Returns:
    A :class:`SolverResult` whose ``weights`` are the ``[n]`` solution ``x``;
    ``converged`` says that no reduced cost is positive (the vertex is
    optimal).
  """
  num_rows, num_cols = matrix.shape
  dtype = jnp.promote_types(matrix.dtype, jnp.float32)
  matrix = matrix.astype(dtype)
  rhs = rhs.astype(dtype)
  objective = objective.astype(dtype)
  basis = basis.astype(jnp.int32)
  tableau = jnp.linalg.solve(matrix[:, basis],
                             jnp.concatenate([matrix, rhs[:, None]], axis=1))
  rows = jnp.arange(num_rows)

  def reduced_costs(tableau, basis):
    # cⱼ − c_Bᵀ B⁻¹Aⱼ: > 0 where bringing column j in raises the objective.
    return objective - objective[basis] @ tableau[:, :num_cols]

  def not_done(carry):
    tableau, basis, iteration, done = carry
    del tableau, basis
    return ~done & (iteration < max_iters)

  def pivot(carry):
    tableau, basis, iteration, _ = carry
    costs = reduced_costs(tableau, basis)
    improving = costs > tol
    entering = jnp.argmax(improving)  # Bland: the first improving column.
    column = tableau[:, entering]
    bounding = column > tol
    ratios = jnp.where(bounding, tableau[:, -1] / jnp.where(
        bounding, column, 1.0), jnp.inf)
    least = jnp.min(ratios)
    # Bland: among the rows of least ratio, the smallest basic index.
    ties = bounding & (ratios <= least + tol * jnp.maximum(1.0, least))
    leaving = jnp.argmin(jnp.where(ties, basis, num_cols))
    stop = ~jnp.any(improving) | ~jnp.any(bounding)
    pivot_row = tableau[leaving] / tableau[leaving, entering]
    updated = tableau - column[:, None] * pivot_row[None, :]
    updated = jnp.where((rows == leaving)[:, None], pivot_row[None, :],
                        updated)
    tableau = jnp.where(stop, tableau, updated)
    basis = jnp.where(stop | (rows != leaving), basis,
                      entering.astype(jnp.int32))
    return tableau, basis, iteration + jnp.where(stop, 0, 1), stop

  tableau, basis, iterations, _ = lax.while_loop(
      not_done, pivot, (tableau, basis, jnp.zeros([], jnp.int32),
                        jnp.asarray(False)))
  optimal = ~jnp.any(reduced_costs(tableau, basis) > tol)
  basic_values = jnp.maximum(jnp.linalg.solve(matrix[:, basis], rhs), 0.0)
  solution = jnp.zeros([num_cols], dtype).at[basis].set(basic_values)
  return SolverResult(weights=solution, iterations=iterations,
                      converged=optimal & jnp.all(jnp.isfinite(solution)))
