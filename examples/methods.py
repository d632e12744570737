"""Every balancing method of the library, by the name the trainer accepts.

``BALANCERS[name](num_tasks, task_specific, seed)`` returns a balancer and
``PRE_TRANSFORMS[name](...)`` a pre-transform (it rescales or averages the
task gradients and keeps the task axis). A method name is a balancer,
optionally preceded by pre-transforms joined with ``+``:
``log_scaling+mgda`` is ``optax.chain(mtl.log_scaling(T), mtl.mgda(T))``.
A new method is one line here. Hyper-parameters are the papers' defaults
unless a comment says otherwise; ``seed`` feeds the randomised methods.
"""

import functools
from typing import Any, Callable

import jax
import optax

import mtl_optax as mtl

Factory = Callable[[int, Any, int], optax.GradientTransformation]


def _simple(factory: Callable[..., Any], **kwargs) -> Factory:
  """A method whose only input besides T is ``task_specific``."""
  return lambda t, specific, seed: factory(t, task_specific=specific, **kwargs)


def _seeded(factory: Callable[..., Any], typed_key: bool = False) -> Factory:
  """A randomised method: the key comes from the run's seed."""
  def make(t, specific, seed):
    key = jax.random.key(seed) if typed_key else seed
    return factory(t, key=key, task_specific=specific)
  make.uses_seed = True
  return make


BALANCERS: dict[str, Factory] = {
    'aligned_mtl': _simple(mtl.aligned_mtl),
    'cagrad': _simple(mtl.cagrad),
    'central_direction': _simple(mtl.central_direction),
    'config': _simple(mtl.config),
    'db_mtl': _simple(mtl.db_mtl),
    'dualproj': _simple(mtl.dualproj),
    'dwa': _simple(mtl.dwa),
    'equal_weighting': _simple(mtl.equal_weighting),
    'fairgrad': _simple(mtl.fairgrad),
    'famo': _simple(mtl.famo),
    'gls': _simple(mtl.gls),
    'graddrop': _seeded(mtl.graddrop),
    'gradnorm': _simple(mtl.gradnorm),
    'gradvac': _seeded(mtl.gradvac),
    'imtl': _simple(mtl.imtl),
    'logse': _simple(mtl.logse),
    'max_norm_weighting': _simple(mtl.max_norm_weighting),
    'mgda': _simple(mtl.mgda),
    'mgda.loss_plus': _simple(mtl.mgda, normalization='loss+'),
    'nash_mtl': _simple(mtl.nash_mtl),
    'pcgrad': _seeded(mtl.pcgrad, typed_key=True),
    'rlw': _seeded(mtl.rlw),
    'task_tensioner': _simple(mtl.task_tensioner),
    'task_tensioner.mgda': _simple(mtl.task_tensioner, base='mgda'),
    'uncertainty_weighting': _simple(mtl.uncertainty_weighting),
    'uncertainty_weighting.bentaieb': _simple(mtl.uncertainty_weighting,
                                              form='bentaieb'),
    'uncertainty_weighting.liebel': _simple(mtl.uncertainty_weighting,
                                            form='liebel'),
    'upgrad': _simple(mtl.upgrad),
}

PRE_TRANSFORMS: dict[str, Factory] = {
    'gradient_ema': _simple(mtl.gradient_ema),
    'log_scaling': _simple(mtl.log_scaling),
    'normalize_task_grads': _simple(mtl.normalize_task_grads),
    'normalize_task_grads.loss': _simple(mtl.normalize_task_grads,
                                         mode='loss'),
}

# Named compositions the trainer lists next to the balancers.
COMPOSITIONS = ('log_scaling+equal_weighting',)


def names() -> list[str]:
  """Every method name ``--method`` lists (any other composition works too)."""
  return sorted(BALANCERS) + list(COMPOSITIONS)


def check(name: str) -> None:
  """Raises ``ValueError`` unless ``name`` is ``[pre+]*balancer``."""
  *pre, last = name.split('+')
  if last not in BALANCERS:
    raise ValueError(f'unknown balancer {last!r} in {name!r}; choose from '
                     f'{sorted(BALANCERS)}.')
  unknown = [piece for piece in pre if piece not in PRE_TRANSFORMS]
  if unknown:
    raise ValueError(f'unknown pre-transforms {unknown} in {name!r}; choose '
                     f'from {sorted(PRE_TRANSFORMS)}.')


def make(name: str, num_tasks: int, task_specific: Any = None,
         seed: int = 0) -> optax.GradientTransformation:
  """The balancer (with its pre-transforms) called ``name``.

  The same arguments give the same object, so a jitted step that holds it
  as a static attribute (``nnx.Optimizer.tx``) compiles once per method, not
  once per run; ``seed`` only counts for the randomised methods.
  """
  check(name)
  uses_seed = any(getattr(factory, 'uses_seed', False) for factory in
                  [PRE_TRANSFORMS.get(piece) for piece in name.split('+')[:-1]]
                  + [BALANCERS[name.split('+')[-1]]])
  return _make(name, num_tasks, task_specific, seed if uses_seed else 0)


@functools.lru_cache(maxsize=None)
def _make(name: str, num_tasks: int, task_specific: Any,
          seed: int) -> optax.GradientTransformation:
  *pre, last = name.split('+')
  pieces = [PRE_TRANSFORMS[piece](num_tasks, task_specific, seed)
            for piece in pre]
  balancer = BALANCERS[last](num_tasks, task_specific, seed)
  return optax.chain(*pieces, balancer) if pieces else balancer
