"""Thesis §5.2: XOR and AND learnt together, Tables 3 (c = 1) and 4 (c = 10).

Nakamura, "Leveraging convergence behavior to balance conflicting tasks in
multi-task learning" (PhD thesis, USP 2023), §5.2, and the authors' public
code (``tiemink/MTL_TaskTensioner``: ``train.py``, ``logic.json``): inputs
{00, 01, 10, 11}; a shared ``Linear(2→2)`` + sigmoid; one ``Linear(2→1)``
head per task; MSE; the XOR targets multiplied by ``c``; SGD with momentum
0.9 and lr 0.05 for every parameter; each epoch shuffles the four points into
two mini-batches of two; the heads step on their own task's gradient, the
shared layer on the method's direction. A task has converged at the first
epoch whose error is below 1e-3; a run has converged when both tasks have,
within the epoch cap (3 000). 50 runs per method, vectorised with ``vmap``;
the epochs run in ``lax.scan``.

Two protocols. *Fixed init* is the authors' code: the network is initialised
from one fixed seed (``torch.manual_seed(136)`` in ``model_selector.py``) and
the 50 runs differ only in the shuffling of the points; we cannot draw
PyTorch's numbers, so our fixed init is ``jax.random.key(136)`` with the same
distribution. *Random init* draws a new initialisation for every run, which
averages over the luck of the init.

The "epoch error" follows the authors' code: the sum of the task's two
mini-batch losses divided by a counter that grows by 2 per task and per
mini-batch, i.e. ``Σ losses / (4 T)`` (T = 2 trained tasks, 1 for the
single-task rows), so the threshold is on a mean mini-batch loss of
``2T · 1e-3``. The table also gives the literal reading (mean epoch loss
below 1e-3).

  python -m mtl_bench.reproduce.xor_and
"""

import os
import sys

from mtl_bench import cli


def parse_args(argv=None):
  """Parses and checks the options; a bad one exits with one line and 2."""
  parser = cli.Parser(prog='python -m mtl_bench.reproduce.xor_and',
                      description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', type=cli.positive_int, default=50,
                      help='runs per method and protocol')
  parser.add_argument('--epochs', type=cli.positive_int, default=3000,
                      help='epoch cap of a run')
  parser.add_argument('--lr', type=cli.positive_float, default=0.05,
                      help="SGD's learning rate")
  parser.add_argument('--momentum', type=cli.unit_float, default=0.9,
                      help="SGD's momentum, in [0, 1)")
  parser.add_argument('--out', default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), 'results'),
                      help='folder of xor_and.md and xor_and.json')
  args = parser.parse_args(argv)
  cli.check_writable_dir(args.out, '--out')
  return args


if __name__ == '__main__':
  ARGS = parse_args()  # --help and bad options end here, before JAX loads.

# pylint: disable=g-import-not-at-top,wrong-import-position,wrong-import-order
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtl_optax as mtl
from mtl_bench import report

HERE = os.path.dirname(os.path.abspath(__file__))

INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
XOR = np.array([0, 1, 1, 0], np.float32)
AND = np.array([0, 0, 0, 1], np.float32)
TASKS = ('XOR', 'AND')
THRESHOLD = 1e-3

# (row name, factory(task_specific), tasks whose convergence counts)
METHODS = (
    ('Single AND', lambda ts: mtl.fixed_weighting(2, [0.0, 1.0],
                                                   task_specific=ts), (1,)),
    ('Single XOR', lambda ts: mtl.fixed_weighting(2, [1.0, 0.0],
                                                   task_specific=ts), (0,)),
    ('Uniform weighting', lambda ts: mtl.equal_weighting(
        2, reduction='sum', task_specific=ts), (0, 1)),
    ('Min-norm', lambda ts: mtl.mgda(2, task_specific=ts), (0, 1)),
    ('Central dir.', lambda ts: mtl.central_direction(2, task_specific=ts),
     (0, 1)),
    ('Min-norm + tensor', lambda ts: mtl.task_tensioner(
        2, base='mgda', task_specific=ts), (0, 1)),
    ('Central dir. + tensor', lambda ts: mtl.task_tensioner(
        2, base='central_direction', task_specific=ts), (0, 1)),
)

# Thesis Tables 3 and 4: (convergence rate %, epochs mean, epochs std).
PAPER = {
    1.0: {'Single AND': (100.0, 351.70, 2.62),
          'Single XOR': (100.0, 871.20, 52.95),
          'Uniform weighting': (100.0, 484.86, 18.12),
          'Min-norm': (100.0, 758.56, 137.15),
          'Central dir.': (100.0, 574.44, 43.37),
          'Min-norm + tensor': (100.0, 493.16, 27.94),
          'Central dir. + tensor': (100.0, 443.02, 21.14)},
    10.0: {'Single AND': (100.0, 351.70, 2.62),
           'Single XOR': (100.0, 2979.00, 0.80),
           'Uniform weighting': (46.0, 1831.60, 810.81),
           'Min-norm': (100.0, 1998.44, 316.38),
           'Central dir.': (100.0, 328.50, 25.45),
           'Min-norm + tensor': (100.0, 210.38, 14.96),
           'Central dir. + tensor': (100.0, 188.20, 24.29)},
}


def init_params(key):
  """PyTorch's default ``nn.Linear`` init: U(±1/√fan_in), fan_in = 2."""
  bound = 1.0 / np.sqrt(2.0)
  keys = jax.random.split(key, 6)
  uniform = lambda k, shape: jax.random.uniform(k, shape, minval=-bound,
                                                maxval=bound)
  return {'shared': {'w': uniform(keys[0], (2, 2)), 'b': uniform(keys[1], (2,))},
          'heads': [{'w': uniform(keys[2], (2, 1)), 'b': uniform(keys[3], (1,))},
                    {'w': uniform(keys[4], (2, 1)), 'b': uniform(keys[5], (1,))}]}


def task_specific(params):
  return {'shared': jax.tree.map(lambda _: False, params['shared']),
          'heads': jax.tree.map(lambda _: True, params['heads'])}


def task_losses(params, x, targets):
  """``[2]`` MSEs of the XOR and AND heads on a mini-batch."""
  hidden = jax.nn.sigmoid(x @ params['shared']['w'] + params['shared']['b'])
  outputs = [hidden @ head['w'] + head['b'] for head in params['heads']]
  return jnp.stack([jnp.mean((output[:, 0] - target) ** 2)
                    for output, target in zip(outputs, targets)])


def make_trainer(balancer, epochs: int, lr: float, momentum: float):
  """``train(init_seed, order_seed, c) -> [epochs, 2]`` mean mini-batch losses."""
  tx = optax.chain(balancer, optax.sgd(lr, momentum=momentum))
  grads_fn = mtl.value_and_task_grads(task_losses)

  def train(init_seed, order_seed, c):
    params = init_params(jax.random.key(init_seed))
    order_key = jax.random.fold_in(jax.random.key(order_seed), 1)
    inputs = jnp.asarray(INPUTS)
    targets = jnp.stack([c * XOR, AND])  # [2 tasks, 4 points]

    def step(carry, points):
      params, opt_state = carry
      losses, grads = grads_fn(params, inputs[points], targets[:, points])
      updates, opt_state = tx.update(grads, opt_state, params,
                                     task_losses=losses)
      return (optax.apply_updates(params, updates), opt_state), losses

    def epoch(carry, key):
      order = jax.random.permutation(key, 4).reshape(2, 2)
      carry, losses = jax.lax.scan(step, carry, order)
      return carry, jnp.mean(losses, axis=0)

    _, epoch_losses = jax.lax.scan(epoch, (params, tx.init(params)),
                                   jax.random.split(order_key, epochs))
    return epoch_losses

  return jax.jit(jax.vmap(train, in_axes=(0, 0, None)))


def convergence(epoch_losses: np.ndarray, tasks: tuple, threshold: float):
  """Epochs to converge per seed (the count of epochs run), NaN if never.

  A task converges at the first epoch below ``threshold``; a run at the
  last of its tasks' convergence epochs (training stops there).
  """
  below = epoch_losses[:, :, list(tasks)] < threshold  # [seeds, epochs, tasks]
  reached = below.any(axis=1)
  first = np.argmax(below, axis=1) + 1
  return np.where(reached.all(axis=1), first.max(axis=1), np.nan)


def summarise(epochs_per_seed: np.ndarray):
  converged = epochs_per_seed[~np.isnan(epochs_per_seed)]
  rate = 100.0 * converged.size / epochs_per_seed.size
  if converged.size == 0:
    return rate, float('nan'), float('nan')
  std = converged.std(ddof=1) if converged.size > 1 else 0.0
  return rate, float(converged.mean()), float(std)


FIXED_INIT_SEED = 136


def run(args):
  runs = np.arange(args.seeds)
  # Both protocols in one vectorised call: fixed init, then random inits.
  init_seeds = np.concatenate([np.full_like(runs, FIXED_INIT_SEED),
                               1000 + runs])
  order_seeds = np.concatenate([runs, runs])
  results = {}
  for name, factory, tasks in METHODS:
    trainer = make_trainer(factory(task_specific), args.epochs, args.lr,
                           args.momentum)
    for c in (1.0, 10.0):
      losses = np.asarray(trainer(init_seeds, order_seeds, c), np.float64)
      # The authors' counter: Σ losses / (4 T) = mean loss / (2 T).
      code_error = losses / (2 * len(tasks))
      for protocol, part in (('fixed', slice(0, len(runs))),
                             ('random', slice(len(runs), None))):
        results[(name, c, protocol)] = {
            'code': summarise(convergence(code_error[part], tasks, THRESHOLD)),
            'literal': summarise(convergence(losses[part], tasks, THRESHOLD)),
        }
  return results


def _cell(rate, mean, std):
  if np.isnan(mean):
    return f'{rate:.0f} | —'
  return f'{rate:.0f} | {mean:.1f} ± {std:.1f}'


def table(results, args, seconds) -> str:
  command = 'python -m mtl_bench.reproduce.xor_and ' + ' '.join(sys.argv[1:])
  lines = [
      '# Thesis §5.2: XOR and AND (Tables 3 and 4)', '',
      f'`{command.strip()}`', '',
      f'Machine: {report.versions()}. Run time: {seconds:.0f} s.', '',
      f'Setup: SGD lr {args.lr:g}, momentum {args.momentum:g}; 2 mini-batches '
      f'of 2 points per epoch; cap {args.epochs} epochs; {args.seeds} runs '
      'per method; PyTorch-default init distribution. "rate" = % of runs '
      'converged; epochs = mean ± sample std over the converged runs. '
      '"fixed init": one init (key 136), runs differ in the shuffling (the '
      'authors\' protocol); "random init": a new init per run. "code" uses '
      'the authors\' epoch error Σ losses / (4T) < 1e-3; "literal" the mean '
      'epoch loss < 1e-3.', '']
  for c, title in ((1.0, 'Table 3: c = 1'), (10.0, 'Table 4: c = 10')):
    lines += [f'## {title}', '',
              '| method | thesis rate % | thesis epochs '
              '| fixed init, code: rate % | epochs '
              '| fixed init, literal: rate % | epochs '
              '| random init, code: rate % | epochs |',
              '|---|---|---|---|---|---|---|---|---|']
    for name, _, _ in METHODS:
      paper = PAPER[c][name]
      fixed = results[(name, c, 'fixed')]
      random = results[(name, c, 'random')]
      lines.append(f'| {name} | {paper[0]:.0f} | {paper[1]:.2f} ± '
                   f'{paper[2]:.2f} | {_cell(*fixed["code"])} | '
                   f'{_cell(*fixed["literal"])} | {_cell(*random["code"])} |')
    lines.append('')
  lines += ['## Differences and likely causes', '', discussion(results), '']
  return '\n'.join(lines)


def discussion(results) -> str:
  epochs = lambda name, c, protocol='fixed': results[(name, c, protocol)][
      'code'][1]
  rate = lambda name, c, protocol='fixed': results[(name, c, protocol)][
      'code'][0]
  return (
      'With the authors\' protocol (one fixed init, runs differing in the '
      'shuffling) the c = 10 table keeps the thesis\' ordering: the '
      'tensioners speed up both base directions (central '
      f"{epochs('Central dir.', 10.0):.0f} → "
      f"{epochs('Central dir. + tensor', 10.0):.0f} epochs, thesis 328.5 → "
      f"188.2; min-norm {epochs('Min-norm', 10.0):.0f} → "
      f"{epochs('Min-norm + tensor', 10.0):.0f}, thesis 1998.4 → 210.4), "
      'central + tensor is the fastest, and uniform weighting converges in '
      f"{rate('Uniform weighting', 10.0):.0f} % of the runs (thesis 46 %). "
      'At c = 1 the tensioners again speed up min-norm and central '
      f"direction ({epochs('Min-norm', 1.0):.0f} → "
      f"{epochs('Min-norm + tensor', 1.0):.0f} and "
      f"{epochs('Central dir.', 1.0):.0f} → "
      f"{epochs('Central dir. + tensor', 1.0):.0f}; thesis 758.6 → 493.2 and "
      '574.4 → 443.0). The differences: (1) the epoch counts and rates depend '
      'strongly on the one init, and ours cannot be PyTorch\'s '
      '`manual_seed(136)` draw — the single-task rows show it most '
      f"(Single AND {epochs('Single AND', 1.0):.0f} epochs here against "
      '351.7; the thesis\' ±2.6 confirms its 50 runs shared one init); with a '
      'new init per run (last columns) every method fails more often, e.g. '
      f"min-norm at c = 10 converges in {rate('Min-norm', 10.0, 'random'):.0f}"
      ' % of the runs; (2) the thesis reports, per method, the best learning '
      'rate of a grid, while every row here uses the authors\' config (lr '
      '0.05); (3) where the thesis reports 100 % for min-norm at c = 10 we '
      f"see {rate('Min-norm', 10.0):.0f} %: its runs need ~2 000 epochs, "
      'close to the 3 000 cap, so a slightly slower init or lr pushes many '
      'past it; (4) our tensioner keeps every `g_t · v_n ≥ 0` at once with '
      'one step length, where the authors\' code projects one task at a time '
      '(METHODS.md), and our min-norm solver runs to a 1e-6 duality gap; (5) '
      'epochs are counted from 1 (the code prints a 0-based index). The '
      '"literal" columns (mean loss < 1e-3: 4× stricter for two tasks, 2× for '
      'one) change '
      'little except for the slowest-converging rows.')


def main(args):
  start = time.perf_counter()
  results = run(args)
  seconds = time.perf_counter() - start
  text = table(results, args, seconds)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'xor_and.md'), 'w') as file:
    file.write(text)
  with open(os.path.join(args.out, 'xor_and.json'), 'w') as file:
    json.dump({f'{name} c={c:g} {protocol} init': value
               for (name, c, protocol), value in results.items()}, file,
              indent=1)
  print(text)


if __name__ == '__main__':
  main(ARGS)
