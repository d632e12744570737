"""Numerical solvers on the T x T Gramian, shared by the methods.

Every solver is a pure, jit-compiled function of the Gramian (no Python loop
over iterations, no host sync) that batches with ``jax.vmap``. The iterative
ones return one :class:`SolverResult`. ``docs/solvers.md`` describes each
solver, its stopping rule and the accuracy the tests guarantee.

* :mod:`min_norm`: ``argmin_{α∈Δ} αᵀGα`` (MGDA, central direction, task
  tensioner).
* :mod:`cagrad_dual`: CAGrad's dual ``argmin_{w∈Δ} bᵀw + r‖Jᵀw‖``.
* :mod:`dual_cone`: projection onto the dual cone (UPGrad, DualProj).
* :mod:`fair_allocation`: the root of ``G w = w^{-1/α}`` (FairGrad,
  Nash-MTL).
* :mod:`spectral`: eigen-decompositions with a rank rule (IMTL-G, ConFIG,
  Aligned-MTL).
* :mod:`scaling`: per-task scaling of the Gramian, ``G[i, j] / (c_i c_j)``.
"""
