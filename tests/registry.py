"""Every public balancing method, as the shared property suite sees it.

A new method joins the suite with one ``Method(...)`` line in ``METHODS``.

``properties`` lists what the method promises (the README's method table says
the same): ``'non_conflicting'`` (``g_t · d >= 0`` for every task),
``'permutation_invariant'`` (permuting the tasks permutes the weights and
leaves the update unchanged) and ``'scale_linear'`` (scaling every gradient
by ``c > 0`` scales the update by ``c``); ``'min_norm'`` marks methods whose
weights are the min-norm point of the convex hull (the suite checks KKT).
"""

from typing import Any, Callable, NamedTuple

import numpy as np

import mtl_optax as mtl

NON_CONFLICTING = 'non_conflicting'
PERMUTATION_INVARIANT = 'permutation_invariant'
SCALE_LINEAR = 'scale_linear'
MIN_NORM = 'min_norm'  # the weights solve min_{w in simplex} wᵀGw (KKT checked)


class Method(NamedTuple):
  name: str
  factory: Callable[..., Any]  # factory(num_tasks, **kwargs)
  kwargs: dict  # float entries are exercised under optax.inject_hyperparams
  needs_losses: bool
  properties: frozenset
  static_args: tuple = ()  # kwargs that inject_hyperparams must not touch

  def make(self, num_tasks: int, **overrides):
    return self.factory(num_tasks, **{**self.kwargs, **overrides})


def _props(*names):
  return frozenset(names)


def _fixed_weighting(num_tasks, *, task_specific=None):
  return mtl.fixed_weighting(num_tasks, np.arange(1.0, num_tasks + 1),
                             task_specific=task_specific)


METHODS = [
    Method('equal_weighting', mtl.equal_weighting, {'reduction': 'mean'},
           False, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('fixed_weighting', _fixed_weighting, {}, False,
           _props(SCALE_LINEAR)),
    Method('logse', mtl.logse, {'floor': 1e-8}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('uncertainty_weighting.kendall', mtl.uncertainty_weighting,
           {'form': 'kendall', 'learning_rate': 1e-2}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('uncertainty_weighting.liebel', mtl.uncertainty_weighting,
           {'form': 'liebel', 'learning_rate': 1e-2}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('uncertainty_weighting.bentaieb', mtl.uncertainty_weighting,
           {'form': 'bentaieb', 'learning_rate': 1e-2}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('max_norm_weighting', mtl.max_norm_weighting, {'eps': 1e-8},
           False, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),  # Up to ε.
    Method('db_mtl', mtl.db_mtl,
           {'beta': 0.9, 'beta_sigma': 0.5, 'eps': 1e-8}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),  # Up to ε.
    Method('dwa', mtl.dwa, {'temperature': 2.0, 'period': 1}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('rlw', mtl.rlw, {'key': 0}, False, _props(SCALE_LINEAR)),
    Method('gls', mtl.gls, {'floor': 1e-8}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('famo', mtl.famo, {'learning_rate': 0.025, 'weight_decay': 1e-3},
           True, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('gradnorm', mtl.gradnorm, {'alpha': 1.5, 'learning_rate': 0.025},
           True, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('cagrad', mtl.cagrad, {'c': 0.5}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('fairgrad', mtl.fairgrad, {'alpha': 1.0}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT)),
    # Nash-MTL solves the raw G α = 1/α (issue 16): like FairGrad at α = 1,
    # its update does not change when the gradients are scaled.
    Method('nash_mtl', mtl.nash_mtl, {'max_norm': 0.0}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT)),
    Method('gradvac', mtl.gradvac, {'beta': 0.01}, False,
           _props(SCALE_LINEAR)),
    Method('graddrop', mtl.graddrop, {'leak': 0.0}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('mgda', mtl.mgda, {'normalization': 'none'}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT, SCALE_LINEAR,
                  MIN_NORM)),
    # Normalised MGDA: Ĝ chooses α, the raw gradients are combined, so no
    # non-conflict promise (mgda docstring, Decision).
    Method('mgda.l2', mtl.mgda, {'normalization': 'l2'}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('mgda.loss+', mtl.mgda, {'normalization': 'loss+'}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('central_direction', mtl.central_direction, {}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # Unit-length tensions: not linear under scaling (after period steps).
    Method('task_tensioner', mtl.task_tensioner,
           {'base': 'central_direction', 'alpha': 0.3, 'period': 1}, True,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT)),
    Method('task_tensioner.mgda', mtl.task_tensioner,
           {'base': 'mgda', 'alpha': 0.3, 'period': 1}, True,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT)),
    Method('pcgrad', mtl.pcgrad, {'key': 0}, False, _props(SCALE_LINEAR)),
    Method('imtl.gradient', mtl.imtl, {'mode': 'gradient'}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('imtl.loss', mtl.imtl, {'mode': 'loss', 'learning_rate': 1e-2},
           True, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('imtl.hybrid', mtl.imtl, {'mode': 'hybrid', 'learning_rate': 1e-2},
           True, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # reg_eps=0: the default ridge (1e-4, TorchJD's) allows conflicts of up to
    # reg_eps·tr(G)·w_t, beyond the suite's tolerance when the update is short.
    Method('upgrad', mtl.upgrad, {'reg_eps': 0.0}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # reg_eps=0: the default ridge (1e-4, TorchJD's) allows conflicts of up to
    # reg_eps·tr(G)·w_t, beyond the suite's tolerance when the update is short.
    Method('dualproj', mtl.dualproj, {'reg_eps': 0.0}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('aligned_mtl', mtl.aligned_mtl, {}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # Non-conflicting when the gradients are linearly independent (T <= P).
    Method('config', mtl.config, {}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # New methods above this line, one Method(...) each.
]
