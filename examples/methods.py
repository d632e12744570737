"""Every balancing method of the library, by the name the trainer accepts.

A method *spec* is a balancer, optionally preceded by pre-transforms joined
with ``+``, each with optional keyword hyper-parameters in call syntax:

  mgda
  cagrad(c=0.4)
  log_scaling+mgda(normalization='loss+')
  fixed_weighting(weights=[1.0, 0.1, 10.0])

``log_scaling+mgda`` is ``optax.chain(mtl.log_scaling(T), mtl.mgda(T))``.
Specs are read with ``ast`` (names and literals only, nothing is evaluated)
and the keyword names are checked against the factory's signature, so a typo
is a one-line error. Every piece is the public factory ``mtl.<name>(T, ...)``;
the trainer supplies ``num_tasks``, ``task_specific`` and, for the randomised
methods, ``key`` (the run's seed). A new method is one line in ``BALANCERS``.

This module imports JAX only when a method is checked or built, so scripts
can list the names in ``--help`` without starting JAX.
"""

import ast
import inspect
from typing import Any, NamedTuple

# The balancers: public factories ``mtl.<name>(num_tasks, ...)``.
BALANCERS = (
    'aligned_mtl', 'cagrad', 'central_direction', 'config', 'cosmos',
    'db_mtl', 'dualproj', 'dwa', 'equal_weighting', 'excess_mtl', 'fairgrad',
    'famo', 'fixed_weighting', 'gls', 'graddrop', 'gradnorm', 'gradvac',
    'imtl', 'krum', 'logse', 'max_norm_weighting', 'mgda', 'moco', 'modo',
    'nash_mtl', 'pbi', 'pcd', 'pcgrad', 'rlw', 'sdmgrad', 'stch',
    'task_tensioner', 'trimmed_mean', 'uncertainty_weighting', 'upgrad',
)

# Pre-transforms: rescale or average the task gradients, keep the task axis.
PRE_TRANSFORMS = ('gradient_ema', 'log_scaling', 'normalize_task_grads')

# What ``--compare all`` trains, with the papers' default hyper-parameters.
# Equal and fixed weighting are not listed: the benchmark trains them as the
# tuned baselines (a grid of learning rates and weightings).
ALL = (
    'aligned_mtl', 'cagrad', 'central_direction', 'config', 'db_mtl',
    'dualproj', 'dwa', 'fairgrad', 'famo', 'gls', 'graddrop', 'gradnorm',
    'gradvac', 'imtl', 'logse', 'max_norm_weighting', 'mgda',
    "mgda(normalization='loss+')", 'nash_mtl', 'pcgrad', 'rlw',
    'task_tensioner', "task_tensioner(base='mgda')", 'uncertainty_weighting',
    "uncertainty_weighting(form='bentaieb')",
    "uncertainty_weighting(form='liebel')", 'upgrad',
    'log_scaling+equal_weighting',
)

# Supplied by the trainer, never by a spec.
_RESERVED = ('num_tasks', 'task_specific', 'key')


class Piece(NamedTuple):
  name: str
  kwargs: tuple  # ((keyword, literal value), ...)


def _piece(node: ast.AST, spec: str) -> Piece:
  if isinstance(node, ast.Name):
    return Piece(node.id, ())
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
    if node.args:
      raise ValueError(f'{spec!r}: give hyper-parameters by keyword, e.g. '
                       f'{node.func.id}(name=value).')
    kwargs = []
    for keyword in node.keywords:
      if keyword.arg is None:
        raise ValueError(f'{spec!r}: ** is not allowed.')
      try:
        value = ast.literal_eval(keyword.value)
      except ValueError:
        raise ValueError(f'{spec!r}: the value of {keyword.arg!r} must be a '
                         'literal (number, string, list, ...).') from None
      kwargs.append((keyword.arg, value))
    return Piece(node.func.id, tuple(kwargs))
  raise ValueError(f'{spec!r} is not a method: write name or '
                   'name(keyword=value, ...), joined with +.')


def parse(spec: str) -> list[Piece]:
  """``spec`` as its pieces, pre-transforms first; ``ValueError`` if malformed."""
  try:
    tree = ast.parse(spec.strip(), mode='eval').body
  except SyntaxError:
    raise ValueError(f'{spec!r} is not a method spec: write name or '
                     'name(keyword=value, ...), joined with +.') from None
  nodes = []
  while isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.Add):
    nodes.insert(0, tree.right)
    tree = tree.left
  nodes.insert(0, tree)
  pieces = [_piece(node, spec) for node in nodes]
  *pre, last = pieces
  if last.name not in BALANCERS:
    raise ValueError(f'unknown balancer {last.name!r} in {spec!r}; choose '
                     f'from {", ".join(BALANCERS)}.')
  unknown = [piece.name for piece in pre if piece.name not in PRE_TRANSFORMS]
  if unknown:
    raise ValueError(f'unknown pre-transform {unknown[0]!r} in {spec!r}; '
                     f'choose from {", ".join(PRE_TRANSFORMS)}.')
  return pieces


def canonical(spec: str) -> str:
  """The spec written one way (``cagrad(c=0.4)``), for tables and file names."""
  return '+'.join(
      piece.name + ('(' + ', '.join(f'{k}={v!r}' for k, v in piece.kwargs)
                    + ')' if piece.kwargs else '')
      for piece in parse(spec))


def _factory(name: str):
  import mtl_optax as mtl  # pylint: disable=g-import-not-at-top
  return getattr(mtl, name)


def needs_weights(spec: str) -> bool:
  """Whether the balancer is ``fixed_weighting`` without its ``weights``."""
  last = parse(spec)[-1]
  return last.name == 'fixed_weighting' and 'weights' not in dict(last.kwargs)


def check(spec: str, num_tasks: int | None = None, *,
          weights_given: bool = False) -> None:
  """Raises a one-line ``ValueError`` unless ``spec`` builds a balancer.

  The keyword names are checked against each factory's signature, the
  required ones must be there (``weights_given``: the caller supplies
  ``fixed_weighting``'s weights), and, given ``num_tasks``, the factory is
  called once so that it checks the values.
  """
  for piece in parse(spec):
    parameters = inspect.signature(_factory(piece.name)).parameters
    allowed = [name for name in parameters if name not in _RESERVED]
    for keyword, _ in piece.kwargs:
      if keyword in _RESERVED:
        raise ValueError(f'{piece.name}: {keyword!r} is set by the trainer, '
                         'not by the spec.')
      if keyword not in parameters:
        raise ValueError(f'{piece.name} has no hyper-parameter {keyword!r}; '
                         f'it takes {", ".join(allowed) or "none"}.')
    given = dict(piece.kwargs)
    missing = [name for name, parameter in parameters.items()
               if parameter.default is inspect.Parameter.empty
               and name not in _RESERVED and name not in given
               and parameter.kind not in (parameter.VAR_POSITIONAL,
                                          parameter.VAR_KEYWORD)
               and not (weights_given and name == 'weights')]
    if missing:
      raise ValueError(f'{piece.name} needs {", ".join(missing)}, e.g. '
                       f"{piece.name}({missing[0]}=...).")
  if num_tasks is None:
    return
  try:
    make(spec, num_tasks, fixed_weights=[1.0] * num_tasks)
  except (ValueError, TypeError) as error:
    message = ' '.join(str(error).split())
    raise ValueError(f'{spec}: {message}') from None


def make(spec: str, num_tasks: int, task_specific: Any = None,
         seed: int = 0, *, key: Any = None, fixed_weights: Any = None):
  """The balancer (chained after its pre-transforms) that ``spec`` names.

  Args:
    spec: a method spec (see the module docstring).
    num_tasks: T.
    task_specific: the ``task_specific`` predicate of every piece.
    seed: the int seed of the randomised pieces (those whose factory takes
      ``key``) when ``key`` is not given.
    key: their PRNG key or int seed, possibly traced (one per vmapped
      network).
    fixed_weights: ``fixed_weighting``'s weights when the spec does not give
      them (possibly traced: the benchmark's grid of weightings).

  Returns:
    An ``optax.GradientTransformation``.
  """
  import optax  # pylint: disable=g-import-not-at-top
  built = []
  for piece in parse(spec):
    factory = _factory(piece.name)
    parameters = inspect.signature(factory).parameters
    kwargs = dict(piece.kwargs)
    if 'key' in parameters:
      kwargs['key'] = seed if key is None else key
    if piece.name == 'fixed_weighting' and 'weights' not in kwargs:
      kwargs['weights'] = fixed_weights
    built.append(factory(num_tasks, task_specific=task_specific, **kwargs))
  return optax.chain(*built) if len(built) > 1 else built[0]
