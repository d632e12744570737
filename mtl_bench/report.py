"""Results of MultiDigits runs: selection on validation, Δp, tables, plots.

Numbers only (numpy and ``stats``); matplotlib is imported by the plotting
functions alone.
"""

import json
import os
import platform
from typing import Sequence

import numpy as np

from mtl_bench import machine
from mtl_bench import multidigits
from mtl_bench import stats

TASKS = multidigits.TASKS
HIGHER = [task.higher_is_better for task in TASKS]
SHORT = ('class', 'pixels', 'sum')  # labels of the progress line and plots
EQUAL = 'equal weighting (tuned lr)'
FIXED = 'fixed weights (tuned lr, weights)'
SIGNIFICANCE = 0.05


def delta_p(metrics: np.ndarray, single_task: np.ndarray,
            higher_is_better: Sequence[bool] = tuple(HIGHER)) -> np.ndarray:
  """Δp of a method over single-task learning, in percent (higher is better).

  Lin et al., "Dual-Balancing for Multi-Task Learning", eqs. 3–4, with one
  metric per task: ``Δp = (100 / T) Σ_t (−1)^{s_t} (M_t − M_t^STL) / M_t^STL``
  where ``s_t = 1`` when a lower metric is better. ``metrics`` may carry
  leading axes (seeds, ...); the last one is the task.
  """
  return np.mean(task_changes(metrics, single_task, higher_is_better),
                 axis=-1)


def task_changes(metrics, single_task,
                 higher_is_better: Sequence[bool] = tuple(HIGHER)):
  """Per-task relative change over single-task learning, % (higher is better)."""
  metrics = np.asarray(metrics, np.float64)
  single_task = np.asarray(single_task, np.float64)
  signs = np.where(np.asarray(higher_is_better), 1.0, -1.0)  # (−1)^{s_t}, eq. 4
  return 100.0 * signs * (metrics - single_task) / single_task


def versions() -> str:
  """One line naming the machine (its CPU model) and the versions."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import sklearn  # pylint: disable=g-import-not-at-top
  return (f'{platform.platform()}, {machine.cpu_model()}'
          f', {os.cpu_count()} CPU cores, {jax.default_backend()} backend; '
          f'python {platform.python_version()}, jax {jax.__version__}, '
          f'optax {optax.__version__}, flax {flax.__version__}, '
          f'scikit-learn {sklearn.__version__}')


def _best(values: np.ndarray, higher: bool) -> int:
  return int(np.argmax(values) if higher else np.argmin(values))


def select_single_task(group: dict, lrs: Sequence[float],
                       seeds: Sequence[int]) -> dict:
  """Per task, the learning rate whose single-task networks validate best.

  Args:
    group: ``{'lr': [M], 'task': [M], 'val': [M, E, T], 'test': [M, E, T]}``
      for every (task, lr, seed) member.
    lrs, seeds: the grid.

  Returns:
    ``{'lr': [T], 'val_reference': [T], 'test_reference': [T] (means over
    seeds), 'test_per_seed': [S, T], 'test_curves': [S, E, T]}``.
  """
  lr, task = np.asarray(group['lr']), np.asarray(group['task'])
  val, test = np.asarray(group['val']), np.asarray(group['test'])
  chosen, val_ref, test_seeds, curves = [], [], [], []
  for t, higher in enumerate(HIGHER):
    rows = [np.flatnonzero((task == t) & np.isclose(lr, value))
            for value in lrs]
    best = _best([val[r, -1, t].mean() for r in rows], higher)
    chosen.append(float(lrs[best]))
    val_ref.append(val[rows[best], -1, t].mean())
    test_seeds.append(test[rows[best], -1, t])
    curves.append(test[rows[best], :, t])
  test_seeds = np.stack(test_seeds, axis=1)
  return {'lr': chosen, 'val_reference': np.asarray(val_ref),
          'test_reference': test_seeds.mean(axis=0),
          'test_per_seed': test_seeds, 'test_curves': np.stack(curves, -1),
          'seeds': list(seeds)}


def select(group: dict, keys: Sequence, single_task: dict) -> dict:
  """The configuration (lr, weights) with the best mean validation Δp.

  Args:
    group: ``{'config': [M] config keys, 'val': [M, E, T], 'test': [M, E,
      T], ...}``; members with the same key differ only in the seed.
    keys: the candidate keys (a subset of the group's configs).
    single_task: from :func:`select_single_task`.

  Returns:
    The chosen key, its validation Δp, its per-seed test metrics and Δp, the
    grid of validation Δp, and the member indices.
  """
  config = list(group['config'])
  val, test = np.asarray(group['val']), np.asarray(group['test'])
  grid = []
  for key in keys:
    rows = [i for i, c in enumerate(config) if c == key]
    grid.append(float(delta_p(val[rows, -1], single_task['val_reference'])
                      .mean()))
  best = int(np.nanargmax(grid))
  rows = [i for i, c in enumerate(config) if c == keys[best]]
  test_per_seed = test[rows, -1]
  return {'config': keys[best], 'val_delta_p': grid[best],
          'grid': [{'config': key, 'val_delta_p': value}
                   for key, value in zip(keys, grid)],
          'members': rows, 'test_per_seed': test_per_seed,
          'delta_p_per_seed': delta_p(test_per_seed,
                                      single_task['test_reference']),
          'test_curves': test[rows]}


def compare_to_equal(rows: dict) -> None:
  """Adds each row's Welch test against tuned equal weighting (in place)."""
  reference = rows[EQUAL]['delta_p_per_seed']
  for name, row in rows.items():
    if name == EQUAL:
      row['p_vs_equal'], row['mark'] = float('nan'), ''
      continue
    test = stats.welch(row['delta_p_per_seed'], reference)
    row['p_vs_equal'] = test.p
    better = np.mean(row['delta_p_per_seed']) > np.mean(reference)
    row['mark'] = (('▲' if better else '▼')
                   if test.p < SIGNIFICANCE else '')


def _cell(values, digits: int = 4) -> str:
  interval = stats.mean_interval(values)
  if np.isnan(interval.half_width):
    return f'{interval.mean:.{digits}g}'
  return f'{interval.mean:.{digits}g} ± {interval.half_width:.2g}'


def _config_text(config) -> str:
  lr, weights = config
  text = f'{lr:g}'
  if weights is not None:
    text += ', w = (' + ', '.join(f'{w:.3g}' for w in weights) + ')'
  return text


def regime_table(result: dict) -> str:
  """The markdown table of one regime (rows sorted by Δp, baselines first)."""
  regime = result['regime']
  single = result['single_task']
  header = (['method', 'lr (chosen on val.)']
            + [f'{task.name} {task.metric} {"↑" if task.higher_is_better else "↓"}'
               for task in TASKS]
            + ['Δp % ↑ (95 % CI)', 'p vs EW', 'train s'])
  lines = [f'### {regime["name"]}', '', regime['description'], '',
           '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  stl = np.asarray(single['test_per_seed'])
  lines.append('| single-task (STL) | ' + ', '.join(
      f'{lr:g}' for lr in single['lr']) + ' | ' + ' | '.join(
          _cell(stl[:, t]) for t in range(len(TASKS))) + ' | 0 | | |')
  rows = result['rows']
  baselines = [name for name in (EQUAL, FIXED) if name in rows]
  methods = sorted((name for name in rows if name not in baselines),
                   key=lambda name: -np.mean(rows[name]['delta_p_per_seed']))
  for name in baselines + methods:
    row = rows[name]
    per_seed = np.asarray(row['test_per_seed'])
    p = row['p_vs_equal']
    cells = ([f'{name} {row["mark"]}'.strip(), _config_text(row['config'])]
             + [_cell(per_seed[:, t]) for t in range(len(TASKS))]
             + [_cell(row['delta_p_per_seed'], 3),
                '' if np.isnan(p) else f'{p:.2g}',
                f'{row["seconds"]:.0f}'])
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def _plus_minus(interval: stats.Interval, unit: str = ' %') -> str:
  if np.isnan(interval.half_width):
    return f'{interval.mean:+.2f}{unit}'
  return f'{interval.mean:+.2f} ± {interval.half_width:.2f}{unit}'


def findings(results: list[dict]) -> str:
  """A sentence per regime: STL vs tuned EW, the best method, the marks."""
  lines = []
  for result in results:
    rows = result['rows']
    equal = stats.mean_interval(rows[EQUAL]['delta_p_per_seed'])
    methods = {name: row for name, row in rows.items() if name != EQUAL}
    best = max(methods, key=lambda n: np.mean(methods[n]['delta_p_per_seed']))
    best_interval = stats.mean_interval(methods[best]['delta_p_per_seed'])
    up = [name for name, row in methods.items() if row['mark'] == '▲']
    down = [name for name, row in methods.items() if row['mark'] == '▼']
    lines.append(
        f'- **{result["regime"]["name"]}**: tuned equal weighting Δp '
        f'{_plus_minus(equal)}; best row {best} '
        f'{_plus_minus(best_interval)}; significantly better than tuned EW (p < {SIGNIFICANCE}): '
        f'{", ".join(up) if up else "none"}; significantly worse: '
        f'{len(down)} of {len(methods)} ({", ".join(down) if down else "none"}).')
  return '\n'.join(lines)


def markdown(results: list[dict], *, command: str, settings: str,
             seconds: float) -> str:
  """The whole report: command, machine, settings, findings, one table per regime."""
  lines = [f'`{command}`', '', f'Machine: {versions()}.', '',
           f'Settings: {settings}', '',
           f'Total wall time: {seconds:.0f} s.', '', '## Findings', '',
           findings(results), '',
           'Each cell: mean ± half-width of the 95 % t-interval over the '
           'seeds, on the test split. Every row\'s learning rate (and, for '
           'fixed weights, the weights) was chosen on the validation split '
           'by the mean validation Δp; the single-task (STL) learning rate '
           'per task by its own validation metric. Δp (Lin et al., DB-MTL, '
           'eqs. 3–4) is relative to the mean test metrics of the tuned '
           'single-task networks. "p vs EW": two-sided Welch t-test of the '
           'per-seed test Δp against tuned equal weighting; ▲/▼ mark '
           f'p < {SIGNIFICANCE} (better/worse). With 3 seeds the test has '
           'little power: unmarked rows are not shown to be equal, only not '
           'shown to differ. "train s": wall time of the row\'s training '
           'group (all its seeds and learning rates at once), compilation '
           'excluded.', '']
  for result in results:
    lines += [regime_table(result), '']
  return '\n'.join(lines)


def _jsonable(value):
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, (np.floating, float)):
    return None if not np.isfinite(value) else float(value)
  if isinstance(value, np.integer):
    return int(value)
  return value


def write_tables(out_dir: str, results: list[dict], table: str,
                 extra: dict) -> list[str]:
  markdown_path = os.path.join(out_dir, 'results.md')
  json_path = os.path.join(out_dir, 'results.json')
  with open(markdown_path, 'w') as file:
    file.write(table)
  slim = []
  for result in results:
    rows = {name: {key: value for key, value in row.items()
                   if key not in ('test_curves', 'members', 'weights_curves')}
            for name, row in result['rows'].items()}
    single = {key: value for key, value in result['single_task'].items()
              if key != 'test_curves'}
    slim.append({'regime': result['regime'], 'single_task': single,
                 'rows': rows})
  with open(json_path, 'w') as file:
    json.dump(_jsonable({**extra, 'tasks': [t._asdict() for t in TASKS],
                         'regimes': slim}), file, indent=1)
  return [markdown_path, json_path]


# ---------------------------------------------------------------- plots ----


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  pyplot.rcParams.update({'font.size': 11, 'axes.titlesize': 11,
                          'axes.labelsize': 11, 'legend.fontsize': 10,
                          'xtick.labelsize': 10, 'ytick.labelsize': 10})
  return pyplot


def _colors(count: int):
  pyplot = _pyplot()
  cycle = pyplot.get_cmap('tab10' if count <= 10 else 'tab20')
  return [cycle(i % cycle.N) for i in range(count)]


def plot_metrics(path: str, result: dict, eval_steps: np.ndarray,
                 names: Sequence[str]) -> str:
  """Test metric per task over training: mean over seeds, band = min..max."""
  pyplot = _pyplot()
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(1, len(TASKS), figsize=(5.2 * len(TASKS), 4))
  curves = [('single-task', result['single_task']['test_curves'])]
  curves += [(name, result['rows'][name]['test_curves']) for name in names]
  colors = ['black'] + _colors(len(names))
  for t, (axis, task) in enumerate(zip(axes, TASKS)):
    for (name, values), color in zip(curves, colors):
      values = np.asarray(values)[:, :, t]  # [seeds, evals]
      style = '--' if name == 'single-task' else '-'
      axis.plot(eval_steps, values.mean(axis=0), style, color=color,
                label=name, linewidth=1.6)
      axis.fill_between(eval_steps, values.min(axis=0), values.max(axis=0),
                        color=color, alpha=0.15, linewidth=0)
    arrow = '↑' if task.higher_is_better else '↓'
    axis.set_title(f'{task.name}')
    axis.set_ylabel(f'test {task.metric} {arrow}')
    axis.set_xlabel('step')
    if not task.higher_is_better:
      axis.set_yscale('log')
      axis.yaxis.set_major_formatter(ticker.ScalarFormatter())
      axis.yaxis.set_minor_formatter(ticker.ScalarFormatter())
    axis.grid(alpha=0.3)
  handles, labels = axes[0].get_legend_handles_labels()
  figure.legend(handles, labels, loc='lower center',
                ncol=min(len(labels), 4), frameon=False)
  figure.suptitle(f'{result["regime"]["name"]}: test metrics over training '
                  '(line: mean over seeds; band: min–max)')
  rows_of_legend = -(-len(labels) // 4)
  figure.tight_layout(rect=(0, 0.06 * rows_of_legend + 0.02, 1, 1))
  figure.savefig(path, dpi=110)
  pyplot.close(figure)
  return path


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
  """Moving average along the first axis (keeps the length)."""
  window = max(1, min(window, len(values)))
  kernel = np.ones(window) / window
  padded = np.concatenate([np.repeat(values[:1], window - 1, axis=0), values])
  return np.stack([np.convolve(padded[:, i], kernel, mode='valid')
                   for i in range(values.shape[1])], axis=1)


def _per_row(count: int) -> int:
  """Methods per row of the weights figure: 3 or 4, the fewer empty slots."""
  if count <= 3:
    return count
  return min((3, 4), key=lambda size: (-count % size, size))


def _weight_scale(axis, values: np.ndarray) -> None:
  """Sets the weights' y scale and limits: tight around the finite values.

  Log when every weight is positive and they span more than 30×, symlog
  (its linear part as wide as the smallest weights) when some are ≤ 0 and
  the magnitudes span as much, linear otherwise; the limits hug the data
  so that no band of the panel is left empty.
  """
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  if not values.size:
    return
  low, high = float(values.min()), float(values.max())
  magnitudes = np.abs(values[values != 0])
  plain = ticker.FuncFormatter(lambda value, _: f'{value:g}')
  if low > 0 and high / low > 30:
    axis.set_yscale('log')
    axis.set_ylim(low / 1.25, high * 1.25)
    axis.yaxis.set_major_formatter(plain)
  elif low <= 0 and magnitudes.size and (
      magnitudes.max() > 30 * max(np.median(magnitudes), 1e-12)):
    linthresh = float(max(np.percentile(magnitudes, 10), 1e-3))
    axis.set_yscale('symlog', linthresh=linthresh)
    axis.set_ylim(low - 0.25 * abs(low) - linthresh * 0.1,
                  high * 1.25 + linthresh * 0.1)
    # 0 and the powers of ten beyond the linear part, every other decade
    # when there are many: labels that do not overlap.
    first = int(np.floor(np.log10(linthresh))) + 1
    last = int(np.ceil(np.log10(magnitudes.max())))
    stride = 1 if last - first < 5 else 2
    ticks = [0.0]
    for power in range(last, first - 1, -stride):
      ticks += [v for v in (10.0**power, -10.0**power)
                if low * 1.25 <= v <= high * 1.25]
    axis.yaxis.set_major_locator(ticker.FixedLocator(sorted(ticks)))
    axis.yaxis.set_major_formatter(plain)
    axis.yaxis.set_minor_locator(ticker.NullLocator())
  else:
    pad = 0.05 * max(high - low, 1e-6)
    axis.set_ylim(low - pad, high + pad)


def plot_weights(path: str, regime_name: str, weights: dict) -> str:
  """Each method's weights over training, on one scale shared by all panels.

  ``weights[name] = (state [steps, T], effective [steps, T])``, means over
  seeds. Each method gets two panels: the weights its state holds
  (``mtl.last_weights``, what the method computes: for DB-MTL the weights
  of log-scaled averaged gradients) and the effective weights (the
  least-squares coefficients of the shared update on the raw task
  gradients, comparable across methods).
  """
  pyplot = _pyplot()
  names = list(weights)
  per_row = _per_row(len(names))
  rows = -(-len(names) // per_row)
  figure, axes = pyplot.subplots(
      rows, 2 * per_row, figsize=(max(9.0, 5.2 * per_row + 1.0),
                                  2.0 * rows + 1.2),
      sharex=True, sharey=True, squeeze=False, layout='constrained')
  everything = np.concatenate([np.ravel(w) for pair in weights.values()
                               for w in pair])
  everything = everything[np.isfinite(everything)]
  colors = _colors(len(TASKS))
  steps = next(iter(weights.values()))[0].shape[0]
  window = max(1, steps // 50)
  for axis in axes.flat[2 * len(names):]:
    axis.set_visible(False)
  for i, name in enumerate(names):
    for kind, values in enumerate(weights[name]):
      axis = axes.flat[2 * i + kind]
      values = np.asarray(values)
      axis.set_title(f'{name}\n' + ('state weights' if kind == 0
                                    else 'effective weights'), fontsize=9)
      axis.grid(alpha=0.3)
      if kind == 1:
        axis.set_facecolor('#f4f4f4')
      if not np.isfinite(values).any():
        axis.text(0.5, 0.5, 'the method keeps\nno task weights',
                  transform=axis.transAxes, ha='center', va='center',
                  fontsize=9, color='grey')
        continue
      smooth = _smooth(values, window)
      for t, task in enumerate(TASKS):
        axis.plot(np.arange(1, steps + 1), smooth[:, t], color=colors[t],
                  label=task.name, linewidth=1.4)
  _weight_scale(axes.flat[0], everything)
  for axis in axes[:, 0]:
    axis.set_ylabel('task weight')
  for axis in axes[-1]:
    axis.set_xlabel('step')
  for column in range(2 * per_row):  # the last row may be short
    bottom = max(r for r in range(rows)
                 if axes[r, column].get_visible()) if any(
                     axes[r, column].get_visible() for r in range(rows)) else 0
    axes[bottom, column].xaxis.set_tick_params(labelbottom=True)
    axes[bottom, column].set_xlabel('step')
  handles, labels = [], []
  for axis in axes.flat:
    handles, labels = axis.get_legend_handles_labels()
    if handles:
      break
  figure.legend(handles, labels, loc='outside lower center', ncol=len(TASKS),
                frameon=False)
  figure.suptitle(
      f'{regime_name}: task weights, mean over seeds (moving average over '
      f'{window} steps), one y scale for all panels. White: the weights '
      'the method keeps (mtl.last_weights);\ngrey: effective weights, the '
      'least-squares fit of the shared update on the raw task gradients',
      fontsize=10)
  figure.savefig(path, dpi=110)
  pyplot.close(figure)
  return path


def _ordered(result: dict) -> list[str]:
  rows = result['rows']
  return sorted(rows, key=lambda n: np.mean(rows[n]['delta_p_per_seed']))


def plot_delta_p(path: str, results: list[dict]) -> str:
  """Δp per row with its 95 % t-interval, one panel per regime."""
  pyplot = _pyplot()
  height = max(len(r['rows']) for r in results) * 0.32 + 1.6
  figure, axes = pyplot.subplots(1, len(results),
                                 figsize=(max(8.0, 5.6 * len(results)),
                                          height),
                                 squeeze=False)
  for axis, result in zip(axes[0], results):
    names = _ordered(result)
    rows = result['rows']
    intervals = [stats.mean_interval(rows[n]['delta_p_per_seed'])
                 for n in names]
    colors = ['tab:orange' if n in (EQUAL, FIXED) else
              ('tab:green' if rows[n]['mark'] == '▲' else
               'tab:red' if rows[n]['mark'] == '▼' else 'tab:blue')
              for n in names]
    positions = np.arange(len(names))
    axis.barh(positions, [i.mean for i in intervals],
              xerr=[np.nan_to_num(i.half_width) for i in intervals],
              color=colors, alpha=0.8, error_kw={'linewidth': 1})
    axis.set_yticks(positions, [f'{n} {rows[n]["mark"]}'.strip()
                                for n in names], fontsize=9)
    axis.axvline(0, color='black', linewidth=0.8)
    axis.axvline(np.mean(rows[EQUAL]['delta_p_per_seed']), color='tab:orange',
                 linestyle='--', linewidth=1)
    axis.set_xlabel('Δp vs single-task, % (95 % CI)')
    axis.set_title(result['regime']['name'])
    axis.grid(axis='x', alpha=0.3)
  figure.suptitle('Δp over single-task learning. Orange: tuned baselines '
                  '(dashed line: tuned equal weighting);\ngreen ▲ / red ▼: '
                  'significantly better / worse than tuned equal weighting '
                  '(Welch, p < 0.05)', fontsize=10)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  pyplot.close(figure)
  return path


def _change_axis(axis, values) -> None:
  """A readable x axis for changes in %: linear if it fits, else symlog.

  Within ±60 % a linear axis with about eight ticks; beyond it a symmetric
  log axis (linear within ±10 %) with ticks at 1, 2 and 5 times the powers
  of ten, written as plain numbers.
  """
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  values = np.asarray([v for v in values if np.isfinite(v)] or [0.0])
  low, high = min(values.min(), 0.0), max(values.max(), 0.0)
  if max(-low, high) <= 60:
    pad = 0.05 * max(high - low, 1.0)
    axis.set_xlim(low - pad, high + pad)
    axis.xaxis.set_major_locator(ticker.MaxNLocator(8))
    return
  linthresh = 10.0
  axis.set_xscale('symlog', linthresh=linthresh)
  steps = [m * 10.0**e for e in range(1, 6) for m in (1, 2, 5)]
  ticks = [0.0] + [v for v in steps if v <= high * 1.05] + [
      -v for v in steps if -v >= low * 1.05]
  ticks += [v for v in (-5.0, 5.0) if low <= v <= high]
  axis.xaxis.set_major_locator(ticker.FixedLocator(sorted(ticks)))
  axis.xaxis.set_major_formatter(ticker.FuncFormatter(
      lambda value, _: f'{value:g}'))
  axis.xaxis.set_minor_locator(ticker.NullLocator())
  axis.set_xlim(low * 1.15 if low < 0 else -1, high * 1.15 if high > 0 else 1)
  axis.tick_params(axis='x', labelsize=8)


def plot_tradeoff(path: str, results: list[dict]) -> str:
  """Per-task change over single-task learning, one row per method."""
  pyplot = _pyplot()
  height = max(len(r['rows']) for r in results) * 0.32 + 1.8
  figure, axes = pyplot.subplots(1, len(results),
                                 figsize=(max(8.0, 5.6 * len(results)),
                                          height),
                                 squeeze=False)
  colors = _colors(len(TASKS))
  markers = ('o', 's', '^')
  for axis, result in zip(axes[0], results):
    names = _ordered(result)
    rows = result['rows']
    reference = result['single_task']['test_reference']
    spans = []
    for t, task in enumerate(TASKS):
      changes = [task_changes(np.asarray(rows[n]['test_per_seed']),
                              reference)[:, t] for n in names]
      means = [c.mean() for c in changes]
      errors = [np.nan_to_num(stats.mean_interval(c).half_width)
                for c in changes]
      spans += [m - e for m, e in zip(means, errors)]
      spans += [m + e for m, e in zip(means, errors)]
      axis.errorbar(means, np.arange(len(names)) + (t - 1) * 0.22,
                    xerr=errors, fmt=markers[t], color=colors[t],
                    markersize=4, linewidth=0.8, label=task.name)
    axis.set_yticks(np.arange(len(names)), names, fontsize=9)
    axis.axvline(0, color='black', linewidth=0.8)
    _change_axis(axis, spans)
    axis.set_xlabel('change vs single-task, % (↑ better)')
    axis.set_title(result['regime']['name'])
    axis.grid(axis='x', alpha=0.3)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  figure.legend(handles, labels, loc='lower center', ncol=len(TASKS),
                frameon=False)
  figure.suptitle('Per-task trade-off: each task\'s test metric relative '
                  'to\nits single-task network (mean, 95 % CI)', fontsize=10)
  figure.tight_layout(rect=(0, 0.04, 1, 1))
  figure.savefig(path, dpi=110)
  pyplot.close(figure)
  return path


def plot_all(run_dir: str, results: list[dict]) -> list[str]:
  """Every plot of a run: per regime the metrics and weights, then Δp and
  the trade-off across regimes. Returns the paths."""
  paths = []
  for result in results:
    name = result['regime']['name']
    rows = result['rows']
    best = sorted((n for n in rows if n not in (EQUAL, FIXED)),
                  key=lambda n: -rows[n]['val_delta_p'])[:5]
    paths.append(plot_metrics(os.path.join(run_dir, f'metrics_{name}.png'),
                              result, result['eval_steps'],
                              [EQUAL, FIXED] + best))
    if result['weight_curves']:
      paths.append(plot_weights(os.path.join(run_dir, f'weights_{name}.png'),
                                name, result['weight_curves']))
  paths.append(plot_delta_p(os.path.join(run_dir, 'delta_p.png'), results))
  paths.append(plot_tradeoff(os.path.join(run_dir, 'tradeoff.png'), results))
  return paths


def main(argv=None):
  """``python -m mtl_bench.report RUN_DIR``: redraws a run's plots."""
  import pickle  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from mtl_bench import cli  # pylint: disable=g-import-not-at-top
  prog = 'python -m mtl_bench.report'
  parser = cli.Parser(prog=prog, description=main.__doc__)
  parser.add_argument('run_dir', help='a folder written by train.py')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  path = os.path.join(args.run_dir, 'plot_data.pkl')
  if not os.path.isfile(path):
    cli.fail(f'{path!r} does not exist: not a train.py run folder', prog)
  with open(path, 'rb') as file:
    results = pickle.load(file)  # Written by train.py; only load your own.
  for written in plot_all(args.run_dir, results):
    print(written)


if __name__ == '__main__':
  main()
