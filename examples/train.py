"""Train a multi-task network on MultiDigits with any balancing method.

  pip install -e ".[examples]" && python examples/train.py

trains the default method and the single-task baselines, then prints the
results table (each task's test metric and Δp versus single-task learning)
and the paths of the table (markdown, JSON) and of the plots (per-task losses
and task weights over training). ``--compare`` runs several methods × seeds
into one table. ``python examples/train.py --help`` lists the options.

The training step is the library's intended use with Flax NNX:
``mtl.value_and_task_grads`` gives the ``[T]`` losses and the per-task
gradients in one forward pass, and ``nnx.Optimizer.update`` forwards
``task_losses`` to the balancer, which is chained before Adam.
"""

import argparse
import functools
import json
import os
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax import nnx

import mtl_optax as mtl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import effective_weights  # pylint: disable=g-import-not-at-top
import methods as methods_lib  # pylint: disable=g-import-not-at-top
import model as model_lib  # pylint: disable=g-import-not-at-top
import multidigits  # pylint: disable=g-import-not-at-top
import report  # pylint: disable=g-import-not-at-top

NUM_TASKS = len(multidigits.TASKS)
DEFAULT_METHOD = 'db_mtl'


class Config(NamedTuple):
  steps: int = 1500
  batch_size: int = 128
  lr: float = 1e-3
  num_train: int = 20_000
  num_test: int = 2_000

  def key(self, seed: int) -> str:
    """Identifies a single-task baseline in the cache."""
    return (f'steps={self.steps},batch={self.batch_size},lr={self.lr:g},'
            f'train={self.num_train},test={self.num_test},seed={seed}')


class Run(NamedTuple):
  metrics: np.ndarray  # shape=[T], test metrics (multidigits.TASKS order)
  losses: np.ndarray  # shape=[steps, T], training losses
  weights: np.ndarray  # shape=[steps, T], the balancer's weights
  seconds: float


def _batch(split: multidigits.Split):
  return (jnp.asarray(split.images), jnp.asarray(split.top_left_label),
          jnp.asarray(split.bottom_right_pixels), jnp.asarray(split.digit_sum))


def train_step(model, optimizer, batch):
  """One step: per-task losses and gradients, then the balancer and Adam."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def losses_fn(params):
    outputs = nnx.merge(graphdef, params, rest)(batch[0])
    return model_lib.task_losses(outputs, batch)

  task_losses, task_grads = mtl.value_and_task_grads(losses_fn)(params)
  optimizer.update(model, task_grads, task_losses=task_losses)
  return task_losses, optimizer.opt_state[0].weights[...]


@nnx.jit
def train_chunk(model, optimizer, train_data, indices):
  """``len(indices)`` steps in one compiled call (a scan over the batches)."""

  @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
  def steps(carry, batch_indices):
    model, optimizer = carry
    batch = jax.tree.map(lambda array: array[batch_indices], train_data)
    return (model, optimizer), train_step(model, optimizer, batch)

  _, (task_losses, weights) = steps((model, optimizer), indices)
  return task_losses, weights


@nnx.jit
def evaluate(model, test_data):
  return model_lib.task_metrics(model(test_data[0]), test_data)


def chunk_size(steps: int, largest: int = 50) -> int:
  """The largest divisor of ``steps`` up to ``largest``: one compiled shape."""
  return max(size for size in range(1, min(largest, steps) + 1)
             if steps % size == 0)


@functools.lru_cache(maxsize=None)
def optimizer_tx(balancer: optax.GradientTransformation,
                 config: Config) -> optax.GradientTransformation:
  """The balancer (reporting its effective weights), then Adam.

  Cached: the same balancer gives the same object, hence one compilation.
  """
  return optax.chain(
      effective_weights.with_effective_weights(balancer, NUM_TASKS,
                                               model_lib.task_specific),
      optax.adam(config.lr))


def train(balancer: optax.GradientTransformation,
          data: multidigits.MultiDigits, config: Config, seed: int, *,
          description: str = '', progress: bool = True,
          prepare=None) -> Run:
  """Trains one network with ``balancer`` chained before Adam.

  ``prepare(optimizer)``, if given, edits the fresh optimizer state (the
  single-task baselines set their one-hot weights there).
  """
  model = model_lib.MultiDigitsNet(rngs=nnx.Rngs(seed))
  optimizer = nnx.Optimizer(model, optimizer_tx(balancer, config),
                            wrt=nnx.Param)
  if prepare is not None:
    prepare(optimizer)
  train_data, test_data = _batch(data.train), _batch(data.test)
  rng = np.random.default_rng(seed)
  num_train = len(data.train.top_left_label)
  size = chunk_size(config.steps)
  losses, weights = [], []
  start = time.perf_counter()
  with tqdm.tqdm(total=config.steps, desc=description, disable=not progress,
                 leave=False, dynamic_ncols=True) as bar:
    for _ in range(config.steps // size):
      indices = rng.integers(0, num_train, (size, config.batch_size))
      chunk_losses, chunk_weights = train_chunk(model, optimizer, train_data,
                                                indices)
      losses.append(chunk_losses)
      weights.append(chunk_weights)
      if progress:
        bar.set_postfix_str('losses ' + ' '.join(
            f'{loss:.3g}' for loss in np.asarray(chunk_losses[-1])))
      bar.update(size)
  metrics = np.asarray(evaluate(model, test_data), np.float64)
  seconds = time.perf_counter() - start
  return Run(metrics, np.asarray(jnp.concatenate(losses), np.float64),
             np.asarray(jnp.concatenate(weights), np.float64), seconds)


def train_method(name: str, data, config: Config, seed: int, *,
                 progress: bool = True) -> Run:
  balancer = methods_lib.make(name, NUM_TASKS, model_lib.task_specific, seed)
  return train(balancer, data, config, seed,
               description=f'{name} seed {seed}', progress=progress)


@functools.lru_cache(maxsize=None)
def _single_task_balancer() -> optax.GradientTransformation:
  fixed = optax.inject_hyperparams(
      mtl.fixed_weighting, static_args=('num_tasks', 'task_specific'))
  return fixed(num_tasks=NUM_TASKS, weights=np.ones(NUM_TASKS),
               task_specific=model_lib.task_specific)


def train_single_task(data, config: Config, seed: int, *,
                      progress: bool = True) -> Run:
  """T single-task networks: task t's metric comes from the one trained on t alone.

  Network t steps its trunk on task t's gradient only (fixed one-hot
  weights); its other heads train on features they do not shape and are
  ignored. The weights are an injected hyper-parameter, so the T networks
  share one compiled step.
  """
  balancer = _single_task_balancer()
  metrics, losses = [], []
  seconds = 0.0
  for t, task in enumerate(multidigits.TASKS):

    def one_hot(optimizer, t=t):
      optimizer.opt_state[0].inner.hyperparams['weights'][...] = jnp.eye(
          NUM_TASKS, dtype=jnp.float32)[t]

    run = train(balancer, data, config, seed, prepare=one_hot,
                description=f'single-task {task.name} seed {seed}',
                progress=progress)
    metrics.append(run.metrics[t])
    losses.append(run.losses[:, t])
    seconds += run.seconds
  return Run(np.asarray(metrics), np.stack(losses, axis=1),
             np.ones([config.steps, NUM_TASKS]), seconds)


def single_task_baselines(out_dir: str, data, config: Config,
                          seeds: list[int], *, progress: bool = True) -> dict:
  """Single-task metrics and losses per seed, cached in ``out_dir``."""
  cache_path = os.path.join(out_dir, 'single_task_cache.json')
  cache = {}
  if os.path.exists(cache_path):
    with open(cache_path) as file:
      cache = json.load(file)
  for seed in seeds:
    if config.key(seed) not in cache:
      run = train_single_task(data, config, seed, progress=progress)
      cache[config.key(seed)] = {'metrics': run.metrics.tolist(),
                                 'losses': run.losses.tolist()}
      with open(cache_path, 'w') as file:
        json.dump(cache, file)
  entries = [cache[config.key(seed)] for seed in seeds]
  return {'seeds': seeds,
          'metrics': [entry['metrics'] for entry in entries],
          'losses': np.mean([entry['losses'] for entry in entries], axis=0)}


def compare(method_names: list[str], seeds: list[int], config: Config,
            out_dir: str, *, command: str, progress: bool = True,
            plots: bool = True) -> dict:
  """Trains every method with every seed; writes the table and the plots.

  Returns:
    ``{'summary': ..., 'table': markdown, 'paths': [...], 'curves': {method:
    (losses [steps, T], weights [steps, T]) averaged over seeds}}``.
  """
  os.makedirs(out_dir, exist_ok=True)
  data = multidigits.load(config.num_train, config.num_test)
  single_task = single_task_baselines(out_dir, data, config, seeds,
                                      progress=progress)
  runs, curves = {}, {}
  for name in method_names:
    method_runs = [train_method(name, data, config, seed, progress=progress)
                   for seed in seeds]
    runs[name] = [{'seed': seed, 'metrics': run.metrics.tolist(),
                   'seconds': run.seconds}
                  for seed, run in zip(seeds, method_runs)]
    curves[name] = (np.mean([run.losses for run in method_runs], axis=0),
                    np.mean([run.weights for run in method_runs], axis=0))
  summary = report.summarise(runs, single_task)
  summary['config'] = config._asdict()
  settings = (f'{config.steps} steps, batch {config.batch_size}, Adam lr '
              f'{config.lr:g}, {config.num_train} training / {config.num_test} '
              'test images (12×12 MultiDigits).')
  table = report.markdown(summary, command=command, settings=settings)
  paths = list(report.write_tables(out_dir, summary, table))
  if plots:
    paths += report.plot(out_dir, curves, single_task['losses'])
  return {'summary': summary, 'table': table, 'paths': paths,
          'curves': curves}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n')[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument(
      '--method', default=DEFAULT_METHOD,
      help='the balancing method: one of ' + ', '.join(methods_lib.names())
      + '; pre-transforms (' + ', '.join(sorted(methods_lib.PRE_TRANSFORMS))
      + ") go in front with '+', e.g. log_scaling+max_norm_weighting")
  parser.add_argument('--compare', nargs='+', metavar='METHOD',
                      help="train several methods (or 'all') into one table; "
                      'overrides --method')
  parser.add_argument('--seeds', type=int, default=1,
                      help='number of seeds per method: seed, seed+1, ...')
  parser.add_argument('--seed', type=int, default=0, help='first seed')
  defaults = Config()
  parser.add_argument('--steps', type=int, default=defaults.steps)
  parser.add_argument('--batch-size', type=int, default=defaults.batch_size)
  parser.add_argument('--lr', type=float, default=defaults.lr,
                      help="Adam's learning rate")
  parser.add_argument('--out', default='runs/multidigits',
                      help='output folder (tables, plots, baseline cache)')
  parser.add_argument('--no-progress', action='store_true',
                      help='hide the progress bars')
  args = parser.parse_args(argv)
  if args.compare:
    args.methods = (methods_lib.names() if args.compare == ['all']
                    else args.compare)
  else:
    args.methods = [args.method]
  for name in args.methods:
    try:
      methods_lib.check(name)
    except ValueError as error:
      parser.error(str(error))
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  config = Config(steps=args.steps, batch_size=args.batch_size, lr=args.lr)
  seeds = list(range(args.seed, args.seed + args.seeds))
  command = 'python examples/train.py ' + ' '.join(
      sys.argv[1:] if argv is None else argv)
  result = compare(args.methods, seeds, config, args.out,
                   command=command.strip(), progress=not args.no_progress)
  print(result['table'])
  print('Wrote:')
  for path in result['paths']:
    print('  ' + path)
  return result


if __name__ == '__main__':
  main()
