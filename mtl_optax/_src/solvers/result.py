"""The one result type of the iterative solvers."""

from typing import NamedTuple

import jax


class SolverResult(NamedTuple):
  """What an iterative solver returns.

  Attributes:
    weights: ``[T]`` the solution (the solver's own variables: simplex weights,
      dual-cone weights or fair-allocation weights).
    iterations: ``()`` int32, iterations used (0 for a closed form).
    converged: ``()`` bool, the stopping rule was met (False: the iteration
      cap was reached, float rounding stopped the progress first, or the
      input was not finite).
  """
  weights: jax.Array  # shape=[T], dtype=float32 (float64 under x64)
  iterations: jax.Array  # shape=(), dtype=int32
  converged: jax.Array  # shape=(), dtype=bool
