"""Every public balancing method, as the shared property suite sees it.

A new method joins the suite with one ``Method(...)`` line in ``METHODS``.

``properties`` lists what the method promises (the README's method table says
the same): ``'non_conflicting'`` (``g_t · d >= 0`` for every task),
``'permutation_invariant'`` (permuting the tasks permutes the weights and
leaves the update unchanged) and ``'scale_linear'`` (scaling every gradient
by ``c > 0`` scales the update by ``c``).
"""

from typing import Any, Callable, NamedTuple

import mtl_optax as mtl

NON_CONFLICTING = 'non_conflicting'
PERMUTATION_INVARIANT = 'permutation_invariant'
SCALE_LINEAR = 'scale_linear'


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


METHODS = [
    Method('equal_weighting', mtl.equal_weighting, {'reduction': 'mean'},
           False, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('fixed_weighting', lambda t, **kw: mtl.fixed_weighting(
        t, [1.0 + i for i in range(t)], **kw), {}, False,
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
    # New methods above this line, one Method(...) each.
]
