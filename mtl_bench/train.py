"""Train multi-task networks on MultiDigits with any balancing method.

  pip install -e ".[examples]" --config-settings editable_mode=compat
  python examples/train.py          # or: python -m mtl_bench

trains the default method (DB-MTL), the tuned baselines (single-task
networks, equal weighting and a few fixed weightings) over 3 seeds, then
prints the results table (each task's test metric and Δp versus single-task
learning, with 95 % intervals and a Welch test against equal weighting) and
the paths of the tables and plots, written to a new folder per run
(``runs/<regime>/<time>``). The baselines are cached in ``runs/cache`` by
their settings and reused by later runs.

  python examples/train.py --method 'cagrad(c=0.4)' --seeds 5
  python examples/train.py --method 'log_scaling+mgda' --regime small_data
  python examples/train.py --compare all --regime all      # the benchmark

``--compare`` trains several methods (``all``: every method the library's
catalog offers) and tunes every row's learning rate on the validation split
(default grid 3e-4 to 3e-2). The seeds and learning rates of a row train
together in one compiled program (``jax.vmap``). ``--help`` lists the
options; JAX is imported only after they have been checked. Ctrl-C stops at
the next safe point (after a compilation or a chunk of steps) with one line
and exit status 130; the run folder is removed, the cached baselines stay.

The dataset lives in its own module (``mtl_bench/multidigits.py``: tasks,
regimes, ``load``) and its network in ``mtl_bench/model.py``; this module
only schedules the groups, caches the baselines and writes the reports.
"""

import hashlib
import json
import os
import pickle
import shlex
import sys
import time

from mtl_bench import cli
from mtl_bench import methods as methods_lib
from mtl_bench import multidigits

NUM_TASKS = len(multidigits.TASKS)
DEFAULT_METHOD = 'db_mtl'
DEFAULT_LR = (1e-3,)
# Wide enough that the benchmark's rows choose inside it (3e-4 to 3e-3 put
# nearly every row on its top; on 3e-4 to 3e-2 only 7 rows of the bottleneck
# regime chose 3e-2: mtl_bench/results/benchmark/results.md).
COMPARE_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
CACHE_VERSION = 1  # bump when the training code changes what a run gives


PROG = 'train.py'
MODULE_PROG = 'python -m mtl_bench'
DATASETS = ('multidigits', 'qm9')


def _dataset(argv) -> str:
  """The value of ``--dataset`` in ``argv`` (the last one wins)."""
  name = DATASETS[0]
  for i, arg in enumerate(argv):
    if arg == '--dataset' and i + 1 < len(argv):
      name = argv[i + 1]
    elif arg.startswith('--dataset='):
      name = arg.split('=', 1)[1]
  return name


def _epilog() -> str:
  regimes = [cli.wrap(f'{regime.name}: {regime.description}', first='  ',
                      indent='      ')
             for regime in multidigits.REGIMES.values()]
  return '\n'.join([
      cli.wrap('Methods (the entries of mtl_optax.catalog; an option such as '
               "mgda.l2 is its factory with that option's keywords): "
               + ', '.join(methods_lib.catalog_names()) + '.'),
      cli.wrap('Pre-transforms (in front of a method, joined with +): '
               + ', '.join(methods_lib.PRE_TRANSFORMS) + '.'),
      'Regimes:', *regimes])


def parse_args(argv=None, prog: str = PROG):
  """Parses and checks every option; a bad one exits with one line and 2."""
  parser = cli.Parser(prog=prog, description=__doc__.split('\n')[0],
                      epilog=_epilog())
  parser.add_argument(
      '--dataset', choices=DATASETS, default=DATASETS[0],
      help='multidigits (these options) or qm9 (QM9\'s 11 tasks; its options '
      'are --preset smoke|cpu|paper and those of python -m '
      'mtl_bench.qm9_train --help)')
  parser.add_argument(
      '--method', default=DEFAULT_METHOD, metavar='SPEC',
      help="the balancing method, with keyword hyper-parameters and "
      "pre-transforms, e.g. 'cagrad(c=0.4)', 'log_scaling+mgda', mgda.l2, "
      "'fixed_weighting(weights=[1, 0.1, 10])'")
  parser.add_argument(
      '--compare', nargs='+', metavar='SPEC',
      help="train several methods (or 'all') into one table; replaces "
      '--method and tunes every learning rate on the validation split')
  parser.add_argument(
      '--regime', nargs='+', default=['multidigits'], metavar='NAME',
      help="benchmark regimes (or 'all'): "
      + ', '.join(multidigits.REGIMES))
  parser.add_argument('--seeds', type=cli.positive_int, default=3,
                      metavar='N', help='seeds per row: seed, seed+1, ...')
  parser.add_argument('--seed', type=cli.non_negative_int, default=0,
                      metavar='N', help='the first seed')
  parser.add_argument('--steps', type=cli.positive_int, default=600,
                      metavar='N', help='training steps')
  parser.add_argument('--batch-size', type=cli.positive_int, default=64,
                      metavar='N', help='images per step')
  parser.add_argument('--hidden', type=cli.positive_int, default=64,
                      metavar='N',
                      help='width of the shared trunk and of the heads')
  parser.add_argument(
      '--lr', type=cli.positive_float, nargs='+', default=None, metavar='LR',
      help="Adam's learning rate; several values are a grid, tuned per row "
      'on the validation split (default: '
      + ' '.join(f'{lr:g}' for lr in DEFAULT_LR) + '; with --compare: '
      + ' '.join(f'{lr:g}' for lr in COMPARE_LRS) + ')')
  parser.add_argument('--eval-every', type=cli.positive_int, default=50,
                      metavar='N', help='steps between two evaluations of '
                      'the validation and test metrics')
  parser.add_argument('--out', default='runs', metavar='DIR',
                      help='root of the run folders: each run writes a new '
                      '<out>/<regime>/<time> folder, never overwriting one')
  parser.add_argument('--cache-dir', default=os.path.join('runs', 'cache'),
                      metavar='DIR',
                      help='where the baselines are cached, keyed by a hash '
                      'of their settings; shared by every --out')
  parser.add_argument('--no-plots', action='store_true',
                      help='write the tables only')
  parser.add_argument('--no-progress', action='store_true',
                      help='print nothing while training')
  args = parser.parse_args(argv)

  specs = args.compare or [args.method]
  if 'all' in specs and specs != ['all']:
    parser.error("--compare: 'all' cannot be mixed with method names")
  if args.regime == ['all']:
    args.regime = list(multidigits.REGIMES)
  for name in args.regime:
    if name not in multidigits.REGIMES:
      parser.error(f'--regime: unknown regime {name!r}; choose from '
                   + ', '.join(multidigits.REGIMES) + ' or all')
  args.regime = list(dict.fromkeys(args.regime))
  if args.lr is None:
    args.lr = list(COMPARE_LRS if args.compare else DEFAULT_LR)
  args.lr = sorted(set(args.lr))
  if args.eval_every > args.steps:
    args.eval_every = args.steps
  cli.check_writable_dir(args.out, '--out')
  cli.check_writable_dir(args.cache_dir, '--cache-dir')
  # The methods come from the library's catalog, and the factories check
  # their hyper-parameters' values: this imports JAX, after --help and the
  # cheap checks.
  if specs == ['all']:
    specs = methods_lib.compare_all(NUM_TASKS)
  canonical = []
  for spec in specs:
    try:
      name = methods_lib.canonical(spec)
    except ValueError as error:
      parser.error(f'--method/--compare: {error}')
    if name not in canonical:
      canonical.append(name)
  args.specs = canonical
  for spec in args.specs:
    try:
      methods_lib.check(spec, NUM_TASKS)
    except ValueError as error:
      parser.error(f'--method/--compare: {error}')
  return args


class Progress:
  """Progress of one group: a tqdm bar on a terminal, plain lines otherwise."""

  def __init__(self, label: str, steps: int, enabled: bool):
    self.label, self.steps, self.enabled = label, steps, enabled
    self.terminal = enabled and sys.stdout.isatty()
    self.bar, self.start, self.last_line = None, 0.0, -1

  def __call__(self, event, value=None):
    cli.check_interrupt()  # after a compilation, after a chunk of steps
    if not self.enabled:
      return
    if event == 'compiling':
      if self.terminal:
        import tqdm  # pylint: disable=g-import-not-at-top
        self.bar = tqdm.tqdm(total=self.steps, desc=self.label, leave=False,
                             dynamic_ncols=True, file=sys.stdout)
        self.bar.set_postfix_str('compiling…')
      else:
        print(f'{self.label}: compiling…', flush=True)
    elif event == 'compiled':
      self.start = time.perf_counter()
      if self.terminal:
        self.bar.set_postfix_str(f'compiled in {value:.1f} s')
      else:
        print(f'{self.label}: compiled in {value:.1f} s', flush=True)
    else:
      losses = 'loss ' + ', '.join(
          f'{name} {loss:.3g}' for name, loss in zip(
              (task.name for task in multidigits.TASKS), value))
      if self.terminal:
        self.bar.update(event - self.bar.n)
        self.bar.set_postfix_str(losses)
        if event >= self.steps:
          self.bar.close()
      else:
        tenth = event * 5 // self.steps  # A line per fifth of the run.
        if tenth != self.last_line or event >= self.steps:
          self.last_line = tenth
          print(f'{self.label}: step {event}/{self.steps}, {losses} '
                f'({time.perf_counter() - self.start:.1f} s)', flush=True)


def _settings_hash(settings: dict) -> str:
  text = json.dumps(settings, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _group_record(members, configs, tasks, history) -> dict:
  return {'config': configs, 'task': tasks,
          'lr': [float(lr) for lr in members.lr],
          'seed': [int(seed) for seed in members.seed],
          'val': history.val_metrics.tolist(),
          'test': history.test_metrics.tolist(),
          'eval_steps': history.eval_steps.tolist(),
          'seconds': history.train_seconds}


def _as_config(config) -> tuple:
  lr, weights = config
  return (float(lr), None if weights is None else tuple(weights))


def cached_group(kind: str, spec: str, members, configs, tasks, data, regime,
                 args, *, progress: bool) -> dict:
  """A baseline group from the cache, or trained and cached.

  The key hashes everything that decides the result: the group, the regime,
  the training settings, the data sizes and ``CACHE_VERSION``.
  """
  from mtl_bench import vmapped
  settings = {'kind': kind, 'spec': spec, 'regime': regime._asdict(),
              'members': [members.seed.tolist(), members.lr.tolist(),
                          members.weights.tolist()],
              'steps': args.steps, 'batch_size': args.batch_size,
              'hidden': args.hidden, 'eval_every': args.eval_every,
              'data': [len(split.digit_sum) for split in data],
              'version': CACHE_VERSION}
  path = os.path.join(args.cache_dir, f'{kind}-{_settings_hash(settings)}.json')
  if os.path.exists(path):
    with open(path) as file:
      record = json.load(file)
    if progress:
      print(f'[{regime.name}] {kind}: cached ({path})', flush=True)
  else:
    history = vmapped.train_group(
        spec, members, data, regime, steps=args.steps,
        batch_size=args.batch_size, hidden=args.hidden,
        eval_every=args.eval_every,
        progress=Progress(f'[{regime.name}] {kind} ({len(members.seed)} '
                          'networks)', args.steps, progress))
    record = _group_record(members, configs, tasks, history)
    record['settings'] = settings
    os.makedirs(args.cache_dir, exist_ok=True)
    temporary = f'{path}.{os.getpid()}.tmp'
    with open(temporary, 'w') as file:
      json.dump(record, file)
    os.replace(temporary, path)  # Atomic: a reader never sees half a file.
  record['config'] = [_as_config(config) for config in record['config']]
  return record


def weightings(initial_losses) -> list[tuple]:
  """The fixed weightings of the tuned grid: equal, 1/L₀ and 1/√L₀.

  The usual hand-tuning heuristics: equal weights, weights that equalise
  the initial losses, and the geometric middle; each sums to T.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  losses = np.maximum(np.asarray(initial_losses, np.float64), 1e-12)
  grid = [np.ones(NUM_TASKS), 1.0 / losses, 1.0 / np.sqrt(losses)]
  return [tuple(float(w) for w in NUM_TASKS * g / g.sum()) for g in grid]


def run_regime(regime, specs, data, args, seeds, *, progress: bool) -> dict:
  """Trains the baselines and ``specs`` on one regime; returns its rows."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtl_bench import vmapped
  from mtl_bench import report
  lrs = args.lr
  eye = np.eye(NUM_TASKS, dtype=np.float32)

  def members(entries):
    seed, lr, weights = zip(*entries)
    return vmapped.Members(np.asarray(seed, np.int32),
                          np.asarray(lr, np.float32),
                          np.asarray(weights, np.float32))

  # Single-task: network (t, lr, seed) steps on task t's gradient alone.
  entries = [(seed, lr, eye[t]) for t in range(NUM_TASKS) for lr in lrs
             for seed in seeds]
  stl_group = cached_group(
      'single_task', 'fixed_weighting', members(entries),
      [(lr, tuple(w.tolist())) for _, lr, w in entries],
      [int(np.argmax(w)) for _, _, w in entries], data, regime, args,
      progress=progress)
  single_task = report.select_single_task(stl_group, lrs, seeds)

  grid = weightings(vmapped.initial_losses(data, regime, args.hidden))
  entries = [(seed, lr, w) for w in grid for lr in lrs for seed in seeds]
  grid_group = cached_group(
      'fixed_grid', 'fixed_weighting', members(entries),
      [(lr, w) for _, lr, w in entries], [-1] * len(entries), data, regime,
      args, progress=progress)
  rows = {}
  equal_keys = [(float(np.float32(lr)), grid[0]) for lr in lrs]
  all_keys = [(float(np.float32(lr)), w) for w in grid for lr in lrs]
  grid_group['config'] = [(float(np.float32(lr)), w)
                          for lr, w in grid_group['config']]
  for name, keys in ((report.EQUAL, equal_keys), (report.FIXED, all_keys)):
    rows[name] = report.select(grid_group, keys, single_task)
    rows[name]['seconds'] = grid_group['seconds']
    rows[name]['config'] = (rows[name]['config'][0],
                            None if name == report.EQUAL
                            else rows[name]['config'][1])
  weight_curves = {}
  for spec in specs:
    entries = [(seed, lr, np.ones(NUM_TASKS)) for lr in lrs for seed in seeds]
    group_members = members(entries)
    history = vmapped.train_group(
        spec, group_members, data, regime, steps=args.steps,
        batch_size=args.batch_size, hidden=args.hidden,
        eval_every=args.eval_every,
        progress=Progress(f'[{regime.name}] {spec} ({len(entries)} networks)',
                          args.steps, progress))
    group = _group_record(group_members,
                          [(float(lr), None) for lr in group_members.lr],
                          [-1] * len(entries), history)
    row = report.select(group, [(float(np.float32(lr)), None) for lr in lrs],
                        single_task)
    row['seconds'] = history.train_seconds
    row['compile_seconds'] = history.compile_seconds
    rows[spec] = row
    chosen = row['members']
    weight_curves[spec] = (history.state_weights[chosen].mean(axis=0),
                           history.effective_weights[chosen].mean(axis=0))
  report.compare_to_equal(rows)
  return {'regime': {**regime._asdict(), 'weightings': grid},
          'single_task': single_task, 'rows': rows,
          'eval_steps': np.asarray(stl_group['eval_steps']),
          'weight_curves': weight_curves}


def main(argv=None, prog: str = PROG) -> dict:
  """Parses ``argv``, trains, writes the run folder; returns what it wrote.

  Ctrl-C, or ``cli.Interrupted`` raised by ``cli.check_interrupt``, removes
  the run folder if nothing was written to it yet and propagates (``run``
  turns it into one line and exit status 130).
  """
  if _dataset(sys.argv[1:] if argv is None else argv) == 'qm9':
    from mtl_bench import qm9_train  # pylint: disable=g-import-not-at-top
    return qm9_train.main(argv, prog, command_prefix=(
        MODULE_PROG if prog == MODULE_PROG else 'python examples/train.py'))
  args = parse_args(argv, prog)
  prefix = ('python -m mtl_bench' if prog == MODULE_PROG
            else 'python examples/train.py')
  command = prefix + ' ' + ' '.join(
      _quote(arg) for arg in (sys.argv[1:] if argv is None else argv))
  folder = ('all' if len(args.regime) == len(multidigits.REGIMES)
            else '+'.join(args.regime))
  root = os.path.join(args.out, folder)
  made = [path for path in (args.out, root) if not os.path.isdir(path)]
  try:
    run_dir = cli.new_run_dir(root)
  except OSError as error:
    cli.fail(f'--out {args.out!r}: cannot create a run folder in {root!r} '
             f'({error.strerror or error})', prog)
  try:
    return train_multidigits(args, command, run_dir)
  except KeyboardInterrupt:  # cli.Interrupted too
    if _remove_if_empty([run_dir] + made[::-1]):
      raise cli.Interrupted('interrupted; nothing was written and the run '
                            'folder is removed (finished baselines stay '
                            'cached)') from None
    raise cli.Interrupted(f'interrupted; partial results in {run_dir}'
                          ) from None


def _remove_if_empty(paths) -> bool:
  """Removes each folder of ``paths`` in turn while it is empty.

  Returns whether the first one (the run folder) went.
  """
  for count, path in enumerate(paths):
    try:
      os.rmdir(path)
    except OSError:
      return count > 0
  return True


def train_multidigits(args, command: str, run_dir: str) -> dict:
  """The MultiDigits benchmark: trains every regime, writes ``run_dir``.

  ``main`` owns the run folder, Ctrl-C and ``--out``; this function owns
  the data (``multidigits``), the network and the reports. Another dataset
  has its own module beside ``multidigits.py`` and is chosen by
  ``--dataset`` in ``main``; its training loop calls
  ``cli.check_interrupt()`` between steps, so Ctrl-C stops it cleanly too.
  """
  progress = not args.no_progress
  if progress:
    print(f'Writing to {run_dir}', flush=True)
  from mtl_bench import report  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  data = multidigits.load()
  seeds = list(range(args.seed, args.seed + args.seeds))
  results = [run_regime(multidigits.REGIMES[name], args.specs, data, args,
                        seeds, progress=progress) for name in args.regime]
  cli.check_interrupt()  # the last chance to leave no folder behind
  seconds = time.perf_counter() - start
  settings = (f'{args.steps} steps, batch {args.batch_size}, trunk and heads '
              f'{args.hidden} wide, Adam with learning rates '
              f'{", ".join(f"{lr:g}" for lr in args.lr)}, seeds {seeds}; '
              f'{len(data.train.digit_sum)} training / '
              f'{len(data.val.digit_sum)} validation / '
              f'{len(data.test.digit_sum)} test images (12×12 MultiDigits); '
              'fixed-weight grid: equal, 1/L₀ and 1/√L₀ (L₀: initial losses), '
              'each summing to 3.')
  table = report.markdown(results, command=command.strip(),
                          settings=settings, seconds=seconds)
  paths = report.write_tables(run_dir, results, table,
                              {'command': command.strip(),
                               'machine': report.versions(),
                               'settings': settings, 'seconds': seconds})
  with open(os.path.join(run_dir, 'plot_data.pkl'), 'wb') as file:
    pickle.dump(results, file)  # `python -m mtl_bench.report DIR` redraws.
  if not args.no_plots:
    paths += report.plot_all(run_dir, results)
  print(table)
  print('Wrote:')
  for path in paths:
    print('  ' + path)
  return {'results': results, 'paths': paths, 'run_dir': run_dir,
          'table': table}


def run(prog: str = PROG) -> None:
  """The command line: ``main`` with Ctrl-C as one line and exit status 130."""
  cli.catch_interrupts()
  try:
    main(prog=prog)
  except KeyboardInterrupt as error:  # cli.Interrupted too
    cli.exit_interrupted(str(error) or 'interrupted', prog)


def _quote(arg: str) -> str:
  """``arg`` as a shell reads it back (readable quotes where they suffice)."""
  if not any(c in arg for c in ' ()\'"+[]=,;$`\\*?<>|&'):
    return arg
  if "'" not in arg:
    return f"'{arg}'"
  if not any(c in arg for c in '"$`\\'):
    return f'"{arg}"'
  return shlex.quote(arg)


if __name__ == '__main__':
  run()
