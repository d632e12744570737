"""Instance-wise risk minimisation: every example of a batch is a task.

  pip install -e ".[examples]" && python examples/instance_wise.py

Quinton and Rey ("Jacobian Descent for Multi-Objective Optimization", 2024,
the instance-wise risk minimisation experiments) train on the vector of
per-example losses instead of their mean:
with T = batch size tasks, UPGrad's update does not increase any example's
loss to first order, where the mean-loss gradient may trade one example
against another. Here the T x T Gramian of the per-example gradients comes
from the Gramian engine (``mtl.value_and_balanced_grad``), so the T x P
per-example gradients are never held.

Setting: scikit-learn's 8x8 digits (bundled with scikit-learn), an MLP
64 -> hidden -> 10, a fraction of the training labels flipped to another
class (``--label-noise``; 0 keeps them clean). Every run starts from the
same parameters, sees the same batches and uses the same Adam optimizer
(Adam's step does not depend on the gradient's scale, so the methods differ
in the direction only). A mean-loss step costs far less than UPGrad's, so the
mean loss also runs 4x as many steps, a second baseline. The table reports the
test accuracy and loss, the worst class's
test loss (group = digit), the worst clean training example's loss, the mean
training loss on the flipped examples (how much of the noise was fitted) and
the time per step; mean ± std over seeds. Runs in a few minutes on a CPU.
"""

import argparse
import math
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT = HERE / 'results' / 'instance_wise.md'
# Table rows: (label, method, multiple of --steps). The mean loss's step is
# far cheaper than UPGrad's, so it also runs 4x as many steps.
RUNS = (('mean loss', 'mean loss', 1),
        ('mean loss, 4x steps', 'mean loss', 4),
        ('UPGrad (engine)', 'upgrad', 1))
METHODS = tuple(label for label, _, _ in RUNS)


class _Parser(argparse.ArgumentParser):
  """Argument errors as one line and exit status 2, no usage block."""

  def error(self, message):
    self.exit(2, f'{self.prog}: error: {message}\n')


def parse_args(argv=None) -> argparse.Namespace:
  parser = _Parser(
      prog='instance_wise.py',
      description='Instance-wise risk minimisation on digits: UPGrad over '
                  'per-example losses (Gramian engine) vs the mean loss.',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--steps', type=int, default=600,
                      help='training steps per run')
  parser.add_argument('--batch-size', type=int, default=64,
                      help='examples per batch = T, the number of tasks')
  parser.add_argument('--chunk-size', type=int, default=16,
                      help="tasks per chunk of the engine's Gramian")
  parser.add_argument('--lr', type=float, default=1e-3,
                      help='Adam learning rate (both methods)')
  parser.add_argument('--hidden', type=int, default=64,
                      help='width of the hidden layer')
  parser.add_argument('--label-noise', type=float, nargs='+',
                      default=[0.0, 0.3], metavar='FRACTION',
                      help='fractions of training labels flipped, in [0, 0.9)')
  parser.add_argument('--seeds', type=int, default=3,
                      help='seeds per setting (0, 1, ...)')
  parser.add_argument('--out', default=str(DEFAULT_OUT),
                      help='markdown file for the results table')
  args = parser.parse_args(argv)
  problems = []
  for name in ('steps', 'seeds', 'hidden'):
    if getattr(args, name) < 1:
      problems.append(f'--{name} must be >= 1, got {getattr(args, name)}')
  if not 2 <= args.batch_size <= 512:
    problems.append(f'--batch-size must be in [2, 512], got {args.batch_size}')
  if not 1 <= args.chunk_size <= max(args.batch_size, 1):
    problems.append('--chunk-size must be in [1, --batch-size], got '
                    f'{args.chunk_size}')
  if not (math.isfinite(args.lr) and args.lr > 0):
    problems.append(f'--lr must be a positive number, got {args.lr}')
  for noise in args.label_noise:
    if not (math.isfinite(noise) and 0 <= noise < 0.9):
      problems.append(f'--label-noise must be in [0, 0.9), got {noise}')
  out = pathlib.Path(args.out)
  if out.suffix != '.md' or out.is_dir():
    problems.append(f'--out must name a .md file, got {args.out}')
  if problems:
    parser.error('; '.join(problems))
  return args


def load_digits(label_noise: float, seed: int):
  """Train/test splits (pixels in [0, 1]) and which train labels were flipped.

  A flipped label is moved to one of the nine other classes, uniformly.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  images = (digits.data / 16.0).astype(np.float32)
  labels = digits.target.astype(np.int32)
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
      images, labels, test_size=0.3, random_state=0, stratify=labels)
  rng = np.random.default_rng(1000 + seed)
  flipped = rng.random(train_y.shape[0]) < label_noise
  shift = rng.integers(1, 10, size=train_y.shape[0])
  noisy_y = np.where(flipped, (train_y + shift) % 10, train_y).astype(np.int32)
  return (train_x, noisy_y, flipped), (test_x, test_y)


def example_losses(params, x, y):
  """``[B]`` cross-entropy of each example of the batch: the B tasks."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  hidden = jax.nn.relu(x @ params['w1'] + params['b1'])
  logits = hidden @ params['w2'] + params['b2']
  return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def make_step(method: str, args):
  """``(step, optimizer, weighting_state)``: one jitted Adam step of ``method``.

  Built once per method and shared by every run (same shapes, one compile).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  import mtl_optax as mtl  # pylint: disable=g-import-not-at-top

  optimizer = optax.adam(args.lr)
  if method == 'mean loss':  # Otherwise 'upgrad'.
    weighting_state = optax.EmptyState()

    def direction(params, weighting_state, x, y):
      grads = jax.grad(lambda p: jnp.mean(example_losses(p, x, y)))(params)
      return grads, weighting_state
  else:
    weighting = mtl.weightings.upgrad()
    weighting_state = weighting.init(args.batch_size)
    balanced = mtl.value_and_balanced_grad(
        example_losses, weighting, chunk_size=args.chunk_size)

    def direction(params, weighting_state, x, y):
      _, grads, weighting_state = balanced(params, weighting_state, x, y)
      return grads, weighting_state

  @jax.jit
  def step(params, opt_state, weighting_state, x, y):
    grads, weighting_state = direction(params, weighting_state, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, weighting_state

  return step, optimizer, weighting_state


def train(method_step, data, args, seed: int, num_steps: int) -> dict:
  """One run of ``num_steps``; the table's metrics and the ms per step."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  step, optimizer, weighting_state = method_step
  (train_x, train_y, flipped), (test_x, test_y) = data
  keys = jax.random.split(jax.random.key(seed), 2)
  params = {
      'w1': jax.random.normal(keys[0], (64, args.hidden)) / 8.0,
      'b1': jnp.zeros(args.hidden),
      'w2': jax.random.normal(keys[1], (args.hidden, 10))
            / math.sqrt(args.hidden),
      'b2': jnp.zeros(10),
  }
  opt_state = optimizer.init(params)

  # One shuffled order per seed, shared by the two methods.
  rng = np.random.default_rng(seed)
  num_train = train_x.shape[0]
  batches_per_epoch = num_train // args.batch_size
  order = np.concatenate([rng.permutation(num_train) for _ in range(
      num_steps // max(batches_per_epoch, 1) + 1)])
  batch = lambda i: order[i * args.batch_size:(i + 1) * args.batch_size]
  first = batch(0)
  jax.block_until_ready(step(params, opt_state, weighting_state,
                             train_x[first], train_y[first]))  # Compiles.
  start = time.perf_counter()
  for i in range(num_steps):
    index = batch(i)
    params, opt_state, weighting_state = step(
        params, opt_state, weighting_state, train_x[index], train_y[index])
  jax.block_until_ready(params)
  step_ms = 1e3 * (time.perf_counter() - start) / num_steps

  weights = {name: np.asarray(value, np.float64)
             for name, value in params.items()}
  test_losses, predictions = _evaluate(weights, test_x, test_y)
  train_losses, _ = _evaluate(weights, train_x, train_y)
  clean = train_losses[~flipped]
  return {
      'test accuracy': float(np.mean(predictions == test_y)),
      'test loss': float(np.mean(test_losses)),
      'worst-class test loss': float(max(
          np.mean(test_losses[test_y == label]) for label in range(10))),
      'worst clean train loss': float(np.max(clean)),
      'clean train loss': float(np.mean(clean)),
      'flipped train loss': (float(np.mean(train_losses[flipped]))
                             if flipped.any() else float('nan')),
      'ms / step': step_ms,
  }


def _evaluate(weights, x, y):
  """Per-example cross-entropies and predicted classes, in float64 NumPy."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  hidden = np.maximum(x @ weights['w1'] + weights['b1'], 0.0)
  logits = hidden @ weights['w2'] + weights['b2']
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  return -log_probs[np.arange(y.shape[0]), y], np.argmax(logits, axis=1)


METRICS = ('test accuracy', 'test loss', 'worst-class test loss',
           'worst clean train loss', 'clean train loss', 'flipped train loss',
           'ms / step')


def _cell(values) -> str:
  import numpy as np  # pylint: disable=g-import-not-at-top
  values = np.asarray(values, dtype=float)
  if np.all(np.isnan(values)):
    return '—'
  if values.size == 1:
    return f'{values[0]:.3g}'
  return f'{np.mean(values):.3g} ± {np.std(values):.2g}'


def table(results: dict, args) -> str:
  """Markdown: one row per (label noise, method), mean ± std over seeds."""
  lines = ['| label noise | method | ' + ' | '.join(METRICS) + ' |',
           '|' + '---|' * (len(METRICS) + 2)]
  for noise, by_method in results.items():
    for method, runs in by_method.items():
      cells = [_cell([run[metric] for run in runs]) for metric in METRICS]
      lines.append(f'| {noise:g} | {method} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> dict:
  args = parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top

  steps = {method: make_step(method, args) for _, method, _ in RUNS}
  results = {}
  for noise in args.label_noise:
    results[noise] = {method: [] for method in METHODS}
    for seed in range(args.seeds):
      data = load_digits(noise, seed)
      for label, method, multiple in RUNS:
        run = train(steps[method], data, args, seed, multiple * args.steps)
        results[noise][label].append(run)
        print(f'noise {noise:g} seed {seed} {label}: ' + ', '.join(
            f'{k} {v:.3g}' for k, v in run.items()), flush=True)
  command = 'python examples/instance_wise.py ' + ' '.join(
      sys.argv[1:] if argv is None else argv)
  text = '\n'.join([
      '# Instance-wise risk minimisation on digits', '',
      f'Command: `{command.strip()}`.', '',
      f'T = batch size = {args.batch_size} per-example losses as tasks, '
      f'{args.steps} Adam steps (4x as many in the second row), lr '
      f'{args.lr:g}, MLP 64-{args.hidden}-10, '
      f'engine chunk size {args.chunk_size}, {args.seeds} seed(s) '
      '(mean ± std). Losses are cross-entropies; "worst-class test loss" is '
      'the largest per-digit mean test loss; the train losses are measured '
      'against the (possibly flipped) training labels; "flipped train loss" '
      'is the mean on the flipped examples (lower = more noise memorised). '
      f'Backend: {jax.default_backend()} ({jax.device_count()} device(s)).',
      '', table(results, args), ''])
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text)
  print(text)
  return results


if __name__ == '__main__':
  main()
