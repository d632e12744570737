"""Every method's weighting, as a value.

``mtl_optax.weightings.<name>(...)`` takes the method's hyper-parameters
(those of the factory ``mtl_optax.<name>``, without ``num_tasks`` and
``task_specific``) and returns a :class:`mtl_optax.Weighting`:
``init(num_tasks) -> state`` and ``weigh(stats, state) -> (weights, state)``.
``mtl_optax.<name>(T, ...)`` is exactly
``mtl_optax.balancer(T, mtl_optax.weightings.<name>(...))``; the same
weighting runs in the Gramian engine (:func:`mtl_optax.value_and_balanced_grad`),
in the loss path (:func:`mtl_optax.weigh_losses`) and in combinators
(:func:`smoothed`, :func:`mtl_optax.weightings.task_tensioner`'s ``base``).
"""

from mtl_optax._src.methods.dwa import dwa
from mtl_optax._src.methods.equal_weighting import equal_weighting
from mtl_optax._src.methods.max_norm_weighting import max_norm_weighting
from mtl_optax._src.methods.mgda import mgda
from mtl_optax._src.methods.smoothed import smoothed
from mtl_optax._src.methods.task_tensioner import task_tensioner
from mtl_optax._src.methods.upgrad import upgrad

__all__ = [
    'dwa',
    'equal_weighting',
    'max_norm_weighting',
    'mgda',
    'smoothed',
    'task_tensioner',
    'upgrad',
]
