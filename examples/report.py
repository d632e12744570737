"""Results of MultiDigits runs: Δp, the markdown/JSON table, the PNG plots."""

import json
import os
import platform
from typing import Sequence

import numpy as np

import multidigits


def delta_p(metrics: np.ndarray, single_task: np.ndarray,
            higher_is_better: Sequence[bool]) -> float:
  """Δp of a method over single-task learning, in percent (higher is better).

  Lin et al., "Dual-Balancing for Multi-Task Learning", eqs. 3–4, with one
  metric per task: ``Δp = (100 / T) Σ_t (−1)^{s_t} (M_t − M_t^STL) / M_t^STL``
  where ``s_t = 1`` when a lower metric is better.
  """
  metrics = np.asarray(metrics, np.float64)
  single_task = np.asarray(single_task, np.float64)
  signs = np.where(np.asarray(higher_is_better), 1.0, -1.0)  # (−1)^{s_t}, eq. 4
  return float(100.0 * np.mean(signs * (metrics - single_task) / single_task))


def versions() -> str:
  """One line naming the machine and the library versions."""
  import flax
  import jax
  import optax
  import sklearn
  return (f'{platform.platform()}, {platform.processor() or platform.machine()}'
          f', {os.cpu_count()} CPU cores, {jax.default_backend()} backend; '
          f'python {platform.python_version()}, jax {jax.__version__}, '
          f'optax {optax.__version__}, flax {flax.__version__}, '
          f'scikit-learn {sklearn.__version__}')


def _mean_std(values) -> str:
  values = np.asarray(values, np.float64)
  if values.size == 1:
    return f'{values[0]:.4g}'
  return f'{values.mean():.4g} ± {values.std(ddof=1):.2g}'


def summarise(runs: dict, single_task: dict) -> dict:
  """Table rows as plain data.

  Args:
    runs: ``{method: [run, ...]}``, one run per seed; ``run['metrics']`` is
      the ``[T]`` list of test metrics.
    single_task: ``{'metrics': [[T] per seed], 'seeds': [...]}`` — the
      single-task baselines, whose per-task mean over seeds is the reference.

  Returns:
    ``{'tasks': [...], 'single_task': {...}, 'methods': {name: {...}}}``.
  """
  higher = [task.higher_is_better for task in multidigits.TASKS]
  reference = np.mean(np.asarray(single_task['metrics'], np.float64), axis=0)
  methods = {}
  for name, method_runs in runs.items():
    metrics = np.asarray([run['metrics'] for run in method_runs], np.float64)
    deltas = [delta_p(row, reference, higher) for row in metrics]
    methods[name] = {
        'seeds': [run['seed'] for run in method_runs],
        'metrics_mean': metrics.mean(axis=0).tolist(),
        'metrics_std': (metrics.std(axis=0, ddof=1).tolist()
                        if len(metrics) > 1 else [0.0] * len(higher)),
        'metrics_per_seed': metrics.tolist(),
        'delta_p_mean': float(np.mean(deltas)),
        'delta_p_std': float(np.std(deltas, ddof=1)) if len(deltas) > 1 else 0.0,
        'delta_p_per_seed': deltas,
        'seconds_mean': float(np.mean([run['seconds'] for run in method_runs])),
    }
  return {
      'tasks': [task._asdict() for task in multidigits.TASKS],
      'single_task': {'seeds': single_task['seeds'],
                      'metrics_mean': reference.tolist(),
                      'metrics_per_seed': single_task['metrics']},
      'methods': methods,
  }


def markdown(summary: dict, *, command: str, settings: str) -> str:
  """The results table, with the command and the machine above it."""
  tasks = multidigits.TASKS
  arrows = ['↑' if task.higher_is_better else '↓' for task in tasks]
  header = ['method'] + [f'{task.name} {task.metric} {arrow}'
                         for task, arrow in zip(tasks, arrows)]
  header += ['Δp % ↑', 'train s/run']
  lines = [f'`{command}`', '', f'Machine: {versions()}', '',
           f'Settings: {settings}', '',
           '| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  single = summary['single_task']
  stl_values = np.asarray(single['metrics_per_seed'], np.float64)
  lines.append('| single-task (STL) | ' + ' | '.join(
      _mean_std(stl_values[:, t]) for t in range(len(tasks))) + ' | 0 | |')
  for name, row in summary['methods'].items():
    per_seed = np.asarray(row['metrics_per_seed'], np.float64)
    cells = [_mean_std(per_seed[:, t]) for t in range(len(tasks))]
    cells.append(_mean_std(row['delta_p_per_seed']))
    cells.append(f"{row['seconds_mean']:.1f}")
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  seeds = summary['single_task']['seeds']
  lines += ['', f'Mean ± sample standard deviation over seeds {seeds}; Δp '
            '(Lin et al., DB-MTL, eqs. 3–4) is relative to the single-task '
            'models trained by the same script with the same steps, batch '
            'size and learning rate, averaged over the same seeds.']
  return '\n'.join(lines) + '\n'


def write_tables(out_dir: str, summary: dict, table: str) -> tuple[str, str]:
  markdown_path = os.path.join(out_dir, 'results.md')
  json_path = os.path.join(out_dir, 'results.json')
  with open(markdown_path, 'w') as file:
    file.write(table)
  with open(json_path, 'w') as file:
    json.dump(summary, file, indent=1)
  return markdown_path, json_path


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
  """Moving average along the first axis (keeps the length)."""
  window = max(1, min(window, len(values)))
  kernel = np.ones(window) / window
  padded = np.concatenate([np.repeat(values[:1], window - 1, axis=0), values])
  return np.stack([np.convolve(padded[:, i], kernel, mode='valid')
                   for i in range(values.shape[1])], axis=1)


def plot(out_dir: str, curves: dict, single_task_losses: np.ndarray) -> list[str]:
  """Writes ``losses.png`` and ``weights.png``; returns their paths.

  Args:
    out_dir: where to write.
    curves: ``{method: (losses [steps, T], weights [steps, T])}``, each the
      mean over seeds.
    single_task_losses: ``[steps, T]``, task t's loss when trained alone.
  """
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot

  tasks = multidigits.TASKS
  steps = single_task_losses.shape[0]
  window = max(1, steps // 50)
  colors = pyplot.rcParams['axes.prop_cycle'].by_key()['color']

  figure, axes = pyplot.subplots(1, len(tasks), figsize=(5 * len(tasks), 4))
  for t, (axis, task) in enumerate(zip(axes, tasks)):
    for i, (name, (losses, _)) in enumerate(curves.items()):
      axis.plot(_smooth(losses, window)[:, t], color=colors[i % len(colors)],
                label=name, linewidth=1.2)
    axis.plot(_smooth(single_task_losses, window)[:, t], color='black',
              linestyle='--', label='single-task', linewidth=1.2)
    axis.set_yscale('log')
    axis.set_title(f'{task.name}: {task.loss}')
    axis.set_xlabel('step')
    axis.grid(alpha=0.3)
  axes[0].set_ylabel(f'training loss (moving average over {window} steps)')
  axes[-1].legend(fontsize=8)
  figure.tight_layout()
  losses_path = os.path.join(out_dir, 'losses.png')
  figure.savefig(losses_path, dpi=110)
  pyplot.close(figure)

  columns = min(3, len(curves))
  rows = -(-len(curves) // columns)
  figure, axes = pyplot.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows),
                                 squeeze=False)
  for axis in axes.flat[len(curves):]:
    axis.set_visible(False)
  for axis, (name, (_, weights)) in zip(axes.flat, curves.items()):
    for t, task in enumerate(tasks):
      axis.plot(_smooth(weights, window)[:, t], color=colors[t],
                label=task.name, linewidth=1.2)
    positive = weights[np.isfinite(weights) & (weights > 0)]
    if positive.size and positive.max() / positive.min() > 30:
      axis.set_yscale('log')
    else:  # Linear, from 0: float noise on constant weights stays invisible.
      axis.set_ylim(min(0.0, np.nanmin(weights)), 1.15 * np.nanmax(weights))
    axis.set_title(name)
    axis.set_xlabel('step')
    axis.set_ylabel('effective task weight w_t')
    axis.grid(alpha=0.3)
  axes.flat[0].legend(fontsize=8)
  figure.suptitle('effective task weights: least-squares fit of the shared\n'
                  'update on the raw task gradients', fontsize=9)
  figure.tight_layout(rect=(0, 0, 1, 0.92))
  weights_path = os.path.join(out_dir, 'weights.png')
  figure.savefig(weights_path, dpi=110)
  pyplot.close(figure)
  return [losses_path, weights_path]
