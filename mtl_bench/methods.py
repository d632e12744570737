"""The trainer's methods: the library's catalog, read when they are needed.

``mtl_optax.catalog.METHODS`` is the one list of methods. The trainer offers
every entry whose ``benchmark`` flag is set, under two kinds of name:

* a public factory's name, with optional keyword hyper-parameters in call
  syntax (``mgda``, ``cagrad(c=0.4)``): ``mtl.<name>(T, ...)`` with the
  library's defaults for what the spec does not give;
* any other entry's name (``mgda.l2``, ``uncertainty_weighting.liebel``,
  ``normalize_task_grads.l2+mgda``): that option of the method. When the
  entry's factory is public, the option is the factory with the keywords
  that set the entry apart from its plain sibling (``mgda.l2`` is
  ``mgda(normalization='l2')``); otherwise it is the entry as registered.

Pre-transforms (they keep the task axis) go in front of a balancer, joined
with ``+``: ``log_scaling+mgda`` is ``optax.chain(mtl.log_scaling(T),
mtl.mgda(T))``. Specs are read with ``ast`` (names and literals only,
nothing is evaluated) and the keyword names are checked against the
factory's signature, so a typo is a one-line error. The trainer supplies
``num_tasks``, ``task_specific``, ``key`` (the run's seed) for the
randomised methods, and ``learning_rate`` for the methods that are the
whole optimizer (``replaces_optimizer``: nothing is chained after them).

A new catalog entry is a trainer method with no edit here. This module
imports JAX only when the catalog is read (``available``, ``check``,
``make``), so ``--help`` and the cheap checks stay fast; ``catalog_names``
reads the catalog's source for the help text.
"""

import ast
import importlib.util
import inspect
import os
import re
from typing import Any, NamedTuple

# Pre-transforms: rescale or average the task gradients, keep the task axis.
# They are not methods of their own, so the catalog does not list them.
PRE_TRANSFORMS = ('gradient_ema', 'log_scaling', 'normalize_task_grads')

# Trained by the benchmark as its tuned baselines (a grid of learning rates
# and weightings), so ``--compare all`` does not train them once more.
BASELINES = ('equal_weighting', 'fixed_weighting')

# Compositions that ``--compare all`` trains beside the catalog's methods:
# DB-MTL's loss-scale step alone (DB-MTL Table 5).
COMPOSITIONS = ('log_scaling+equal_weighting',)

# Supplied by the trainer, never by a spec.
_RESERVED = ('num_tasks', 'task_specific', 'key')


def _catalog():
  from mtl_optax import catalog  # pylint: disable=g-import-not-at-top
  return catalog


def _public_names() -> dict:
  """``{id(factory): name}`` of the package's public factories."""
  import mtl_optax as mtl  # pylint: disable=g-import-not-at-top
  return {id(getattr(mtl, name)): name for name in mtl.__all__}


def _base(name: str) -> str:
  return re.split(r'[.+]', name)[0]


class Entry(NamedTuple):
  """A catalog entry as the trainer offers it."""
  name: str  # the catalog's name: mgda, mgda.l2, ...
  spec: str  # what it trains: mgda(normalization='l2'); the name if private
  method: Any  # the catalog.Method


def _is_literal(value) -> bool:
  """Whether ``repr(value)`` reads back as ``value`` (a spec can write it)."""
  try:
    return ast.literal_eval(repr(value)) == value
  except (ValueError, SyntaxError, TypeError):
    return False


def _entries() -> dict:
  """``{catalog name: Entry}`` of every entry, read from the catalog now."""
  public = _public_names()
  methods = _catalog().METHODS
  by_name = {method.name: method for method in methods}
  entries = {}
  for method in methods:
    factory_name = public.get(id(method.factory))
    if factory_name is None or not all(map(_is_literal,
                                           method.kwargs.values())):
      # A private wrapper, or an argument a spec cannot write (a weighting
      # object): the entry as registered, under its name.
      entries[method.name] = Entry(method.name, method.name, method)
      continue
    reserved = _RESERVED + (('learning_rate',)
                            if getattr(method, 'replaces_optimizer', False)
                            else ())
    parameters = inspect.signature(method.factory).parameters
    sibling = by_name.get(factory_name)
    reference = ({} if sibling is None or sibling is method
                 else dict(sibling.kwargs))
    kwargs = []
    for keyword, value in method.kwargs.items():
      parameter = parameters.get(keyword)
      if keyword in reserved or parameter is None:
        continue
      required = parameter.default is inspect.Parameter.empty
      differs = (keyword in reference and reference[keyword] != value) or (
          keyword not in reference and method.name != factory_name
          and not required and parameter.default != value)
      if required or differs:
        kwargs.append((keyword, value))
    spec = _write([Piece(factory_name, tuple(kwargs))])
    entries[method.name] = Entry(method.name, spec, method)
  return entries


def available(num_tasks: int | None = None) -> dict:
  """``{catalog name: spec}`` of the methods the trainer offers, now.

  Read from ``mtl_optax.catalog.METHODS`` at call time: an entry registered
  a moment ago is in it. Entries whose ``benchmark`` flag is off (test-only
  variants) and, given ``num_tasks``, those needing more tasks are left out.
  """
  return {name: entry.spec for name, entry in _entries().items()
          if getattr(entry.method, 'benchmark', True)
          and (num_tasks is None or entry.method.min_tasks <= num_tasks)}


def balancers() -> list[str]:
  """The public factories the catalog's entries are built with, sorted."""
  return sorted(_vocabulary()[1])


def compare_all(num_tasks: int) -> list[str]:
  """What ``--compare all`` trains: every offered method, then compositions."""
  specs = []
  for name, spec in available(num_tasks).items():
    if _base(name) in BASELINES or spec in specs:
      continue
    specs.append(spec)
  return specs + [spec for spec in COMPOSITIONS if spec not in specs]


def catalog_names() -> list[str]:
  """The catalog's entry names, read from its source without importing JAX.

  For ``--help`` only (help must stay instant); ``available`` is the
  authority.
  """
  spec = importlib.util.find_spec('mtl_optax')  # finds, imports nothing
  if spec is None or not spec.submodule_search_locations:
    return []
  path = os.path.join(list(spec.submodule_search_locations)[0], 'catalog.py')
  try:
    with open(path, encoding='utf-8') as file:
      source = file.read()
  except OSError:
    return []
  names = re.findall(r"""\bMethod\(\s*(['"])(.+?)\1""", source)
  return list(dict.fromkeys(name for _, name in names))


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


def _write(pieces) -> str:
  return '+'.join(
      piece.name + ('(' + ', '.join(f'{k}={v!r}' for k, v in piece.kwargs)
                    + ')' if piece.kwargs else '')
      for piece in pieces)


def _vocabulary() -> tuple[dict, frozenset]:
  """``({option name: Entry}, balancer names)`` from the catalog."""
  import mtl_optax as mtl  # pylint: disable=g-import-not-at-top
  entries = _entries()
  balancers = {_base(name) for name in entries if '+' not in name}
  balancers = frozenset(name for name in balancers if hasattr(mtl, name))
  options = {name: entry for name, entry in entries.items()
             if name not in balancers}
  return options, balancers


def parse(spec: str) -> list[Piece]:
  """``spec`` as its pieces, pre-transforms first; ``ValueError`` if malformed.

  A catalog option's name (``mgda.l2``) stands for its spec; a private
  entry (``normalize_task_grads.l2+mgda``) is one piece of that name.
  """
  options, balancers = _vocabulary()
  option = options.get(spec.strip())
  if option is not None:
    if option.spec == option.name:
      return [Piece(option.name, ())]
    spec = option.spec
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
  if last.name not in balancers:
    raise ValueError(f'unknown balancer {last.name!r} in {spec!r}; choose '
                     f'from {", ".join(sorted(balancers))} or an option: '
                     f'{", ".join(options)}.')
  unknown = [piece.name for piece in pre if piece.name not in PRE_TRANSFORMS]
  if unknown:
    raise ValueError(f'unknown pre-transform {unknown[0]!r} in {spec!r}; '
                     f'choose from {", ".join(PRE_TRANSFORMS)}.')
  return pieces


def canonical(spec: str) -> str:
  """The spec written one way (``cagrad(c=0.4)``), for tables and file names."""
  return _write(parse(spec))


def _factory(name: str):
  """``(factory, kwargs it always gets, catalog.Method or None)`` of a piece."""
  import mtl_optax as mtl  # pylint: disable=g-import-not-at-top
  options, _ = _vocabulary()
  if name in options:  # a private entry: as registered
    method = options[name].method
    return method.factory, dict(method.kwargs), method
  entries = [method for method in _catalog().METHODS
             if _base(method.name) == name]
  return getattr(mtl, name), {}, entries[0] if entries else None


def replaces_optimizer(spec: str) -> bool:
  """Whether the method is the whole optimizer (nothing chained after it).

  Such a method (MTAdam, AdaTask) takes the trainer's ``learning_rate``.
  """
  method = _factory(parse(spec)[-1].name)[2]
  return bool(getattr(method, 'replaces_optimizer', False))


def _reserved(spec: str) -> tuple:
  return _RESERVED + (('learning_rate',) if replaces_optimizer(spec) else ())


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
  reserved = _reserved(spec)
  for piece in parse(spec):
    factory, fixed, _ = _factory(piece.name)
    parameters = inspect.signature(factory).parameters
    allowed = [name for name in parameters if name not in reserved]
    for keyword, _ in piece.kwargs:
      if keyword in reserved:
        raise ValueError(f'{piece.name}: {keyword!r} is set by the trainer, '
                         'not by the spec.')
      if keyword not in parameters:
        raise ValueError(f'{piece.name} has no hyper-parameter {keyword!r}; '
                         f'it takes {", ".join(allowed) or "none"}.')
    given = {**fixed, **dict(piece.kwargs)}
    missing = [name for name, parameter in parameters.items()
               if parameter.default is inspect.Parameter.empty
               and name not in reserved and name not in given
               and parameter.kind not in (parameter.VAR_POSITIONAL,
                                          parameter.VAR_KEYWORD)
               and not (weights_given and name == 'weights')]
    if missing:
      raise ValueError(f'{piece.name} needs {", ".join(missing)}, e.g. '
                       f"{piece.name}({missing[0]}=...).")
  if num_tasks is None:
    return
  try:
    make(spec, num_tasks, fixed_weights=[1.0] * num_tasks,
         learning_rate=1e-3)
  except (ValueError, TypeError) as error:
    message = ' '.join(str(error).split())
    raise ValueError(f'{spec}: {message}') from None


def make(spec: str, num_tasks: int, task_specific: Any = None,
         seed: int = 0, *, key: Any = None, fixed_weights: Any = None,
         learning_rate: Any = None):
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
    learning_rate: given to a method that replaces the optimizer
      (``replaces_optimizer``; possibly traced), ignored by the others.

  Returns:
    An ``optax.GradientTransformation``.
  """
  import optax  # pylint: disable=g-import-not-at-top
  built = []
  for piece in parse(spec):
    factory, fixed, method = _factory(piece.name)
    parameters = inspect.signature(factory).parameters
    kwargs = {**fixed, **dict(piece.kwargs)}
    if 'key' in parameters:
      kwargs['key'] = seed if key is None else key
    if piece.name == 'fixed_weighting' and 'weights' not in kwargs:
      kwargs['weights'] = fixed_weights
    if getattr(method, 'replaces_optimizer', False):
      kwargs['learning_rate'] = learning_rate
    built.append(factory(num_tasks, task_specific=task_specific, **kwargs))
  return optax.chain(*built) if len(built) > 1 else built[0]
