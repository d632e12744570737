"""Every balancing method of the library, by the name the trainer accepts.

``BALANCERS[name](num_tasks, task_specific, seed)`` returns a balancer and
``PRE_TRANSFORMS[name](...)`` a pre-transform (it rescales or averages the
task gradients and keeps the task axis). A method name is a balancer,
optionally preceded by pre-transforms joined with ``+``:
``log_scaling+mgda`` is ``optax.chain(mtl.log_scaling(T), mtl.mgda(T))``.
A new method is one line here. Hyper-parameters are the papers' defaults
unless a comment says otherwise; ``seed`` feeds the randomised methods.
"""

from typing import Any, Callable

import optax

import mtl_optax as mtl

Factory = Callable[[int, Any, int], optax.GradientTransformation]


def _uncertainty(form: str) -> Factory:
  return lambda t, specific, seed: mtl.uncertainty_weighting(
      t, form=form, task_specific=specific)


BALANCERS: dict[str, Factory] = {
    'db_mtl': lambda t, specific, seed: mtl.db_mtl(t, task_specific=specific),
    'dwa': lambda t, specific, seed: mtl.dwa(t, task_specific=specific),
    'equal_weighting': lambda t, specific, seed: mtl.equal_weighting(
        t, task_specific=specific),
    'famo': lambda t, specific, seed: mtl.famo(t, task_specific=specific),
    'gls': lambda t, specific, seed: mtl.gls(t, task_specific=specific),
    'gradnorm': lambda t, specific, seed: mtl.gradnorm(
        t, task_specific=specific),
    'logse': lambda t, specific, seed: mtl.logse(t, task_specific=specific),
    'max_norm_weighting': lambda t, specific, seed: mtl.max_norm_weighting(
        t, task_specific=specific),
    'rlw': lambda t, specific, seed: mtl.rlw(
        t, key=seed, task_specific=specific),
    'uncertainty_weighting': _uncertainty('kendall'),
    'uncertainty_weighting.bentaieb': _uncertainty('bentaieb'),
    'uncertainty_weighting.liebel': _uncertainty('liebel'),
}

PRE_TRANSFORMS: dict[str, Factory] = {
    'gradient_ema': lambda t, specific, seed: mtl.gradient_ema(
        t, task_specific=specific),
    'log_scaling': lambda t, specific, seed: mtl.log_scaling(
        t, task_specific=specific),
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
  """The balancer (with its pre-transforms) called ``name``."""
  check(name)
  *pre, last = name.split('+')
  pieces = [PRE_TRANSFORMS[piece](num_tasks, task_specific, seed)
            for piece in pre]
  balancer = BALANCERS[last](num_tasks, task_specific, seed)
  return optax.chain(*pieces, balancer) if pieces else balancer
