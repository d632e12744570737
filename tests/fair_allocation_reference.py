"""Float64 NumPy references for the fair-allocation systems (FairGrad, Nash-MTL).

Both methods solve ``G w = w^{-1/α}`` for ``w > 0`` (Nash-MTL: α = 1 on
``G / ‖G‖_F``). The reference is a different formulation from the library's
(which minimises a convex potential in ``w`` on the cosine matrix): Newton on
``u = log w`` drives the residual ``r(u) = G e^u − e^{−u/α}`` to zero with a
backtracking line search on ``‖r‖``.
"""

import numpy as np


def newton_root(gram, alpha):
  """float64 root of ``G w = w^{-1/α}`` by Newton on ``u = log w``."""
  u = np.zeros(len(gram))

  def residual(u):
    return gram @ np.exp(u) - np.exp(-u / alpha)

  for _ in range(200):
    r = residual(u)
    jacobian = gram * np.exp(u)[None, :] + np.diag(np.exp(-u / alpha) / alpha)
    step = np.linalg.solve(jacobian, -r)
    length = 1.0
    while (np.linalg.norm(residual(u + length * step)) >= np.linalg.norm(r)
           and length > 1e-12):
      length *= 0.5
    u = u + length * step
    if np.linalg.norm(residual(u)) < 1e-13 * np.linalg.norm(np.exp(-u / alpha)):
      break
  return np.exp(u)


def solvable_jacobian(num_tasks, seed):
  """Random task gradients whose common component keeps 0 out of the hull,
  so a root exists."""
  rng = np.random.default_rng(seed)
  return rng.normal(size=(num_tasks, 6)) + 1.5 * rng.normal(size=6)
