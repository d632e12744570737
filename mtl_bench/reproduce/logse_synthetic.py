"""LogSE §4: two Gaussian-bump regression tasks, error and unfairness per epoch.

Ghasemi-Naraghi, Nickabadi and Safabakhsh, "LogSE: An Uncertainty-Based
Multi-Task Loss Function for Learning Two Regression Tasks", section 4 and
Figs. 3–4. ``x ~ U[−500, 700]``; ``y_t`` is the normal density of mean
``µ_t`` and deviation ``σ_t`` at ``x``, with ``(µ1, σ1) = (0, 100)``,
``µ2 = 200`` and ``σ2 ∈ {100, 50, 25}``; 70/10/20 train/validation/test.
A shared trunk and one head per task; after every epoch, the test error
(mean of the two tasks' MSEs) and the unfairness ``|err_1 − err_2|``.

Methods: plain MSE (equal weights), LogSE, Kendall's uncertainty weighting,
the paper's "Best Variances" (its eq. 8 with the generating σ's, i.e. fixed
weights ``1/(2σ_t²)``), and the best fixed weights of a grid (chosen on the
validation split). Seeds are vectorised with ``vmap``, epochs and steps run
in ``lax.scan``.

  python -m mtl_bench.reproduce.logse_synthetic
"""

import os
import sys

from mtl_bench import cli


def parse_args(argv=None):
  """Parses and checks the options; a bad one exits with one line and 2."""
  parser = cli.Parser(prog='python -m mtl_bench.reproduce.logse_synthetic',
                      description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', type=cli.positive_int, default=5,
                      help='seeds per method')
  parser.add_argument('--epochs', type=cli.positive_int, default=30,
                      help='training epochs')
  parser.add_argument('--points', type=cli.positive_int, default=4000,
                      help='points drawn, split 70/10/20 into train, '
                      'validation and test (at least 20)')
  parser.add_argument('--batch-size', type=cli.positive_int, default=64,
                      help='points per step')
  parser.add_argument('--lr', type=cli.positive_float, default=1e-3,
                      help="Adam's learning rate")
  parser.add_argument('--out', default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), 'results'),
                      help='folder of the table, JSON and plot')
  args = parser.parse_args(argv)
  if args.points < 20:
    parser.error(f'--points: at least 20, got {args.points}')
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

MEANS = (0.0, 200.0)
SIGMA_1 = 100.0
SIGMA_2 = (100.0, 50.0, 25.0)
X_RANGE = (-500.0, 700.0)
# Both targets are multiplied by this, so that task 1 peaks at 1 and task 2
# at σ1/σ2 ∈ {1, 2, 4}: the ratio of the tasks' scales is the paper's, while
# the absolute scale suits float32 and Adam (on the raw scale, peaks of 0.004
# and MSEs near 1e-6, Adam's ε and float32 noise dominated the late epochs).
# MSE, LogSE and fixed weights under Adam do not depend on a common factor;
# uncertainty weighting does (its log-variances start at 0 and must reach
# log L).
TARGET_SCALE = np.sqrt(2.0 * np.pi) * SIGMA_1
FIXED_RATIOS = tuple(2.0 ** np.arange(-6, 3))  # w_2 / w_1 on the grid
HIDDEN = 32


def gaussian(x, mean, sigma):
  return np.exp(-0.5 * ((x - mean) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)


def make_data(sigma_2: float, num_points: int, seed: int = 0):
  """Train/validation/test ``(x [N, 1], y [N, 2])`` with x standardised."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(*X_RANGE, size=num_points)
  y = np.stack([gaussian(x, MEANS[0], SIGMA_1),
                gaussian(x, MEANS[1], sigma_2)], axis=1) * TARGET_SCALE
  x = (x - np.mean(X_RANGE)) / (np.ptp(X_RANGE) / np.sqrt(12.0))
  cut_1, cut_2 = int(0.7 * num_points), int(0.8 * num_points)
  split = lambda a, b: (jnp.asarray(x[a:b, None], jnp.float32),
                        jnp.asarray(y[a:b], jnp.float32))
  return split(0, cut_1), split(cut_1, cut_2), split(cut_2, num_points)


def init_params(key):
  """A 2-layer tanh trunk of width 32 and a 2-layer head per task."""
  def dense(key, fan_in, fan_out):
    bound = 1.0 / np.sqrt(fan_in)  # PyTorch's default nn.Linear range.
    weight_key, bias_key = jax.random.split(key)
    return {'w': jax.random.uniform(weight_key, (fan_in, fan_out),
                                    minval=-bound, maxval=bound),
            'b': jax.random.uniform(bias_key, (fan_out,),
                                    minval=-bound, maxval=bound)}
  keys = jax.random.split(key, 6)
  return {
      'trunk': [dense(keys[0], 1, HIDDEN), dense(keys[1], HIDDEN, HIDDEN)],
      'heads': [[dense(keys[2], HIDDEN, HIDDEN // 2),
                 dense(keys[3], HIDDEN // 2, 1)],
                [dense(keys[4], HIDDEN, HIDDEN // 2),
                 dense(keys[5], HIDDEN // 2, 1)]],
  }


def mlp(layers, h, last_linear):
  for i, layer in enumerate(layers):
    h = h @ layer['w'] + layer['b']
    if not (last_linear and i == len(layers) - 1):
      h = jnp.tanh(h)
  return h


def predict(params, x):
  features = mlp(params['trunk'], x, last_linear=False)
  return jnp.concatenate([mlp(head, features, last_linear=True)
                          for head in params['heads']], axis=1)


def task_errors(params, x, y):
  """``[2]`` per-task MSEs."""
  return jnp.mean((predict(params, x) - y) ** 2, axis=0)


def task_specific(params):
  return {'trunk': jax.tree.map(lambda _: False, params['trunk']),
          'heads': jax.tree.map(lambda _: True, params['heads'])}


def balancer(method: str, fixed_weights=None):
  """The method's balancer (``fixed_weights`` may be traced)."""
  if method == 'mse':
    return mtl.equal_weighting(2, task_specific=task_specific)
  if method == 'logse':
    return mtl.logse(2, task_specific=task_specific)
  if method == 'uncertainty':
    return mtl.uncertainty_weighting(2, form='kendall',
                                     task_specific=task_specific)
  return mtl.fixed_weighting(2, fixed_weights, task_specific=task_specific)


def make_trainer(method: str, epochs: int, batch_size: int, lr: float):
  """``train(seed, fixed_weights, data) -> (val [E, 2], test [E, 2])``."""
  # Built outside the trace: only the fixed weights vary between models.
  method_tx = None if method == 'fixed' else balancer(method)

  def train(seed, fixed_weights, train_data, val_data, test_data):
    x, y = train_data
    steps_per_epoch = x.shape[0] // batch_size
    key, init_key = jax.random.split(jax.random.key(seed))
    params = init_params(init_key)
    tx = optax.chain(method_tx or balancer(method, fixed_weights),
                     optax.adam(lr))
    grads_fn = mtl.value_and_task_grads(
        lambda p, xb, yb: task_errors(p, xb, yb))

    def step(carry, batch):
      params, opt_state = carry
      losses, grads = grads_fn(params, *batch)
      updates, opt_state = tx.update(grads, opt_state, params,
                                     task_losses=losses)
      return (optax.apply_updates(params, updates), opt_state), None

    def epoch(carry, epoch_key):
      order = jax.random.permutation(epoch_key, x.shape[0])
      order = order[:steps_per_epoch * batch_size].reshape(steps_per_epoch, -1)
      carry, _ = jax.lax.scan(step, carry, (x[order], y[order]))
      params = carry[0]
      return carry, (task_errors(params, *val_data),
                     task_errors(params, *test_data))

    carry = (params, tx.init(params))
    _, (val, test) = jax.lax.scan(epoch, carry, jax.random.split(key, epochs))
    return val, test

  return jax.jit(jax.vmap(train, in_axes=(0, 0, None, None, None)))


def run(args) -> dict:
  seeds = np.arange(args.seeds)
  results = {}
  trainers = {method: make_trainer(method, args.epochs, args.batch_size,
                                   args.lr)
              for method in ('mse', 'logse', 'uncertainty', 'fixed')}
  for sigma_2 in SIGMA_2:
    train_data, val_data, test_data = make_data(sigma_2, args.points)
    curves = {}
    for method in ('mse', 'logse', 'uncertainty'):
      _, test = trainers[method](seeds, np.ones((len(seeds), 2)), train_data,
                                 val_data, test_data)
      curves[method] = np.asarray(test)
    known = np.array([1 / SIGMA_1**2, 1 / sigma_2**2]) / 2  # Paper's eq. 8.
    _, test = trainers['fixed'](seeds, np.tile(known, (len(seeds), 1)),
                                train_data, val_data, test_data)
    curves['known variances'] = np.asarray(test)
    grid = np.array([[1.0, ratio] for ratio in FIXED_RATIOS])
    grid_seeds = np.repeat(seeds, len(grid))
    grid_weights = np.tile(grid, (len(seeds), 1))
    val, test = trainers['fixed'](grid_seeds, grid_weights, train_data,
                                  val_data, test_data)
    val = np.asarray(val).reshape(len(seeds), len(grid), args.epochs, 2)
    test = np.asarray(test).reshape(len(seeds), len(grid), args.epochs, 2)
    # Selected on a scale-free criterion, the validation MSE of each task over
    # its target variance (1 − R²), averaged: on the paper's own error (the
    # mean of the raw MSEs) the equal weights win by construction.
    variance = np.var(np.asarray(train_data[1]), axis=0)
    best = int(np.argmin((val[:, :, -1] / variance).mean(axis=(0, 2))))
    curves['best fixed'] = test[:, best]
    results[sigma_2] = {'curves': curves, 'best_ratio': FIXED_RATIOS[best]}
  return results


METHOD_NAMES = {
    'mse': 'MSE (equal weights)',
    'logse': 'LogSE',
    'uncertainty': 'uncertainty weighting (Kendall)',
    'known variances': "known variances (paper's 'Best Variances')",
    'best fixed': 'best fixed weights (grid)',
}


def epochs_to_reach(error: np.ndarray, target: float) -> str:
  """First epoch (1-based) where the mean curve is at or below ``target``."""
  hits = np.nonzero(error <= target)[0]
  return str(hits[0] + 1) if hits.size else '—'


def table(results, args, seconds) -> str:
  checkpoints = sorted({max(1, args.epochs // 10), args.epochs // 4,
                        args.epochs // 2, args.epochs})
  command = 'python -m mtl_bench.reproduce.logse_synthetic ' + ' '.join(
      sys.argv[1:])
  lines = [
      '# LogSE §4: two regression tasks, error and unfairness per epoch', '',
      f'`{command.strip()}`', '',
      f'Machine: {report.versions()}. Run time: {seconds:.0f} s.', '',
      f'Setup: {args.points} points (70/10/20 split), x ~ U[−500, 700] '
      'standardised, targets × √(2π)·100 (task 1 peaks at 1, task 2 at '
      f'σ1/σ2); trunk 1→{HIDDEN}→{HIDDEN} tanh, heads {HIDDEN}→{HIDDEN // 2}'
      f'→1; Adam lr {args.lr:g}, batch {args.batch_size}, {args.epochs} '
      f'epochs; mean over {args.seeds} seeds. Error = mean of the two test '
      'MSEs, unfairness = |err₁ − err₂| (test), both × 10⁻³.', '']
  for sigma_2, result in results.items():
    curves = result['curves']
    mse_final = curves['mse'].mean(axis=(0, 2))[-1]
    lines += [
        f'## (µ, σ) = (0, 100) and (200, {sigma_2:g}); best fixed w₂/w₁ = '
        f"{result['best_ratio']:g}", '',
        '| method | ' + ' | '.join(f'error @{e}' for e in checkpoints)
        + ' | ' + ' | '.join(f'unfair. @{e}' for e in checkpoints)
        + ' | epochs to MSE\'s final error |',
        '|---|' + '---|' * (2 * len(checkpoints) + 1)]
    for method, name in METHOD_NAMES.items():
      errors = curves[method]  # [seeds, epochs, 2]
      error = errors.mean(axis=2)  # [seeds, epochs]
      unfair = np.abs(errors[..., 0] - errors[..., 1])
      cells = [f'{1e3 * error[:, e - 1].mean():.3g}' for e in checkpoints]
      cells += [f'{1e3 * unfair[:, e - 1].mean():.3g}' for e in checkpoints]
      cells.append(epochs_to_reach(error.mean(axis=0), mse_final))
      lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  lines += ['## Next to the paper, differences and likely causes', '',
            discussion(results, args), '']
  return '\n'.join(lines)


def _final(result, method, epochs):
  errors = result['curves'][method]
  return (1e3 * errors.mean(axis=2)[:, epochs - 1].mean(),
          1e3 * np.abs(errors[..., 0] - errors[..., 1])[:, epochs - 1].mean())


def discussion(results, args) -> str:
  equal, unequal = results[SIGMA_2[0]], results[SIGMA_2[-1]]
  logse_equal, mse_equal = (_final(equal, 'logse', args.epochs),
                            _final(equal, 'mse', args.epochs))
  logse_unequal, mse_unequal = (_final(unequal, 'logse', args.epochs),
                                _final(unequal, 'mse', args.epochs))
  uw_unequal = _final(unequal, 'uncertainty', args.epochs)
  return (
      'The paper reports these experiments as curves only (Figs. 3–4), no '
      'numbers; its claims are that LogSE reaches the lowest error in the '
      'fewest epochs, that it is fairer than MSE and about as fair as "Best '
      'Variances", and that uncertainty weighting is the weakest. We confirm '
      'LogSE\'s claims at σ = (100, 100): it ends at error '
      f'{logse_equal[0]:.3g} and unfairness {logse_equal[1]:.3g} (× 10⁻³) '
      f'against MSE\'s {mse_equal[0]:.3g} and {mse_equal[1]:.3g}, and reaches '
      'MSE\'s final error in about half the epochs; but uncertainty weighting '
      'is not the weakest there (it ends lowest). We do not confirm them '
      f'when the scales differ: at σ = (100, {SIGMA_2[-1]:g}) LogSE ends at '
      f'{logse_unequal[0]:.3g} / {logse_unequal[1]:.3g} against MSE\'s '
      f'{mse_unequal[0]:.3g} / {mse_unequal[1]:.3g}, and uncertainty '
      f'weighting is the best of the four ({uw_unequal[0]:.3g} / '
      f'{uw_unequal[1]:.3g}). The likely cause is the weighting itself: '
      '`w_t = 1/(2 L_t)` favours the task with the *smaller* loss. The '
      'narrow bump has the larger targets and the larger MSE, so LogSE '
      'starves it, while both metrics here are absolute MSEs dominated by '
      'that task; once the wide bump is fitted to ~1e-5 its weight is ~100× '
      'the other\'s and its gradient noise steers the shared trunk. The '
      'paper does not give its network, optimizer, learning rate, data size, '
      'input normalisation or epoch count; ours (above) are guesses, and '
      'the comparison between the methods depends on them: Adam removes '
      'any common loss scale, which takes away the step-size effect of '
      'LogSE\'s `1/L` that plain SGD would have, and multiplying the '
      'targets by √(2π)·100 puts the log-variances of uncertainty weighting '
      'near their optimum from the start (on the raw scale they must travel '
      'to about −14 from 0). The paper\'s "Best Variances" uses the '
      'generating σ\'s as the variances of its eq. 8; those weights, '
      '`1/(2σ_t²)`, weight the narrow bump 16× more at σ₂ = 25, which is not '
      'better than MSE here; the best fixed weights of the grid (chosen on '
      'validation 1 − R²) are close to MSE.')


def plot(results, path):
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot
  figure, axes = pyplot.subplots(2, len(results), figsize=(15, 7.5))
  for column, (sigma_2, result) in enumerate(results.items()):
    for method, name in METHOD_NAMES.items():
      errors = result['curves'][method]
      epochs = np.arange(1, errors.shape[1] + 1)
      axes[0, column].plot(epochs, errors.mean(axis=2).mean(axis=0), label=name)
      axes[1, column].plot(
          epochs, np.abs(errors[..., 0] - errors[..., 1]).mean(axis=0))
    axes[0, column].set_title(f'σ = (100, {sigma_2:g})')
    for row, label in enumerate(['test error', 'unfairness |err₁ − err₂|']):
      axes[row, column].set_yscale('log')
      axes[row, column].set_xlabel('epoch')
      axes[row, column].set_ylabel(label)
      axes[row, column].grid(alpha=0.3)
  axes[0, 0].legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot.close(figure)


def main(args):
  start = time.perf_counter()
  results = run(args)
  seconds = time.perf_counter() - start
  os.makedirs(args.out, exist_ok=True)
  text = table(results, args, seconds)
  with open(os.path.join(args.out, 'logse_synthetic.md'), 'w') as file:
    file.write(text)
  with open(os.path.join(args.out, 'logse_synthetic.json'), 'w') as file:
    json.dump({str(sigma): {'best_ratio': result['best_ratio'],
                            'test_errors_mean_over_seeds': {
                                method: curve.mean(axis=0).tolist()
                                for method, curve in result['curves'].items()}}
               for sigma, result in results.items()}, file)
  plot(results, os.path.join(args.out, 'logse_synthetic.png'))
  print(text)


if __name__ == '__main__':
  main(ARGS)
