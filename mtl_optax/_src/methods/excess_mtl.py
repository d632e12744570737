"""ExcessMTL: task weights that grow with each task's estimated excess risk."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_optax._src import base
from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics

_LOGIT_FLOOR = -1e30  # Far below any logit that still gives a weight > 0.


class ExcessMTLState(NamedTuple):
  """State of :func:`excess_mtl`: T x P floats for P shared parameters."""
  weights: jax.Array  # shape=[T], dtype=float32; on the simplex, 1/T at first
  root_sum_squares: tuple  # one [T, *leaf.shape] array per shared leaf, in
  # the leaf's dtype promoted to float32: sqrt(Σ_k g_k²), the AdaGrad
  # accumulator
  baseline: jax.Array  # shape=[T], dtype=float32; excess risk that scales
  # each task's (0 until set)
  warmup_sum: jax.Array  # shape=[T], dtype=float32; sum of warm-up excess
  # risks
  count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count)
  # shape=(), dtype=int32; finite updates so far, saturating

  def task_weights(self) -> jax.Array:
    """``[T]`` weights of the last finite update ``Σ_t w_t g_t``."""
    return self.weights


def _accumulate(root, grads, finite):
  """``(new root, per-task Σ_p g² / sqrt(S))`` for one shared leaf.

  The root stays as it was unless ``finite``: the guard is in the pass that
  writes the T x P accumulator, not a second pass over it.
  """
  grads = gramian_lib.sharded_like(grads.astype(root.dtype), root)
  # sqrt(S + g²) without forming g² or S: hypot neither overflows nor
  # underflows, so the accumulator survives gradients near 1e±20 in float32.
  root = jnp.where(finite, jnp.hypot(root, grads), root)
  magnitude = jnp.abs(grads)
  # g²/sqrt(S) = |g| · (|g|/sqrt(S)) with |g| <= sqrt(S): bounded by |g|.
  excess = magnitude * numerics.safe_div(magnitude, root)
  entry_axes = tuple(range(1, grads.ndim))
  return root, jnp.sum(excess, axis=entry_axes).astype(jnp.float32)


def excess_mtl(
    num_tasks: int,
    *,
    learning_rate: float = 1e-2,
    warmup_steps: int = 1,
    task_specific: base.TaskSpecific = None,
    robust_step_size: float | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Up-weights the tasks whose estimated excess risk is largest.

  He, Zhou, Zhao and Zhang, "Robust Multi-Task Learning with Excess Risks"
  (ICML 2024). Each task's excess risk (its loss minus the best loss it could
  reach) is estimated by a second-order expansion around the current point,
  ``E_t ≈ g_tᵀ H_t⁻¹ g_t`` (eq. 6), with the Hessian replaced by the AdaGrad
  diagonal ``H_t = diag(sqrt(Σ_{j<=k} g_{t,j}²))`` (eq. 7):

  ``E_t = Σ_p g_{t,p}² / sqrt(S_{t,p})``, ``S_t = Σ_{j<=k} g_{t,j}²``.

  Each ``E_t`` is divided by a baseline ``E_t⁰`` so that tasks of different
  loss scales compare (§3.2), and the weights take an exponentiated-gradient
  (mirror ascent) step on the simplex (eq. 9):

  ``w_t ← w_t exp(η E_t / E_t⁰) / Σ_s w_s exp(η E_s / E_s⁰)``,

  starting from ``w = 1/T``. The update is ``Σ_t w_t g_t``.

  **State: T x P floats** for P shared parameters (the accumulator
  ``sqrt(S)``, in each leaf's dtype promoted to float32), plus ``[T]``
  vectors.

  **Decisions.** The baseline is the mean excess risk over the first
  ``warmup_steps`` updates, during which the weights stay uniform (the
  paper, Appendix C.1, collects these statistics over 3 epochs). The default
  ``warmup_steps=1`` is the official code's and LibMTL's behaviour: the
  first update is the uniform one and its excess risks become the baseline.
  ``warmup_steps=0`` is TorchJD's default: the first update steps with the
  raw, unscaled ``E_t`` and makes them the baseline. A task whose baseline
  is 0 (its gradient was 0 so far) takes no step and its next positive
  excess risk becomes its baseline. The weights sum to 1 (the paper's
  simplex, as TorchJD); LibMTL's sum to T, so its learning rate is T times
  larger. ``learning_rate`` ``η = 0.01`` is LibMTL's default.
  ``S`` has no ``1e-7`` added under the root as in the peers' code: the
  quotient is bounded by ``|g|`` and guarded where ``S = 0``, so the weights
  are exactly invariant to a common scale of the gradients. The logits are
  kept in log space, so a weight may reach 0 but never NaN. The weights are
  constants to autodiff. Task-specific leaves get their own task's gradient
  and no accumulator.

  Args:
    num_tasks: T.
    learning_rate: ``η > 0``, the step size of the weight update (LibMTL's
      ``robust_step_size``).
    warmup_steps: the number of updates with uniform weights whose mean
      excess risk is the baseline, a Python int >= 0.
    task_specific: leaves that belong to one task (see :func:`balancer`).
    robust_step_size: deprecated name of ``learning_rate``, removed in 0.3.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`ExcessMTLState`; ``state.weights`` are the weights of the last
    finite update.

  Example:
    >>> import jax.numpy as jnp
    >>> import mtl_optax as mtl
    >>> tx = mtl.excess_mtl(2, learning_rate=1.0, warmup_steps=0)
    >>> grads = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(3)))
    >>> [round(float(w), 4) for w in state.weights]  # softmax([6, 8])
    [0.1192, 0.8808]
    >>> updates.round(4)
    Array([4.808, 1.   , 1.   ], dtype=float32)
  """
  base.check_num_tasks(num_tasks)
  learning_rate = base.renamed('excess_mtl', 'robust_step_size',
                               robust_step_size, 'learning_rate',
                               learning_rate)
  base.check_range('learning_rate', learning_rate, 0.0, low_open=True)
  if (isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int)
      or warmup_steps < 0):
    raise ValueError(
        f'warmup_steps must be a Python int >= 0, got {warmup_steps!r}.')
  name = 'excess_mtl'

  def init(shared_params):
    tasks = jnp.zeros([num_tasks], jnp.float32)
    roots = base.stacked_zeros(num_tasks, shared_params, jnp.float32)
    return ExcessMTLState(
        weights=jnp.full([num_tasks], 1.0 / num_tasks, jnp.float32),
        root_sum_squares=roots, baseline=tasks, warmup_sum=tasks,
        count=jnp.zeros([], jnp.int32))

  def step(shared, specific, losses, state, inputs_finite):
    del losses
    base.check_shared(name, shared)
    base.check_stacked_state(name, 'accumulates', state.root_sum_squares,
                             shared)
    finite = inputs_finite & numerics.all_finite(*shared)
    accumulated = [_accumulate(root, jax.lax.stop_gradient(grads), finite)
                   for root, grads in zip(state.root_sum_squares, shared)]
    roots = tuple(root for root, _ in accumulated)
    excess = gramian_lib.replicated(  # Eqs. 6–7.
        sum(leaf_excess for _, leaf_excess in accumulated))

    count = state.count
    in_warmup = count < warmup_steps
    first = count == warmup_steps
    warmup_sum = jnp.where(in_warmup, state.warmup_sum + excess,
                           state.warmup_sum)
    if warmup_steps:
      first_baseline = state.warmup_sum / warmup_steps
      ratio_first = numerics.safe_div(excess, first_baseline)
    else:  # TorchJD: the first step uses the raw excess risks.
      first_baseline = excess
      ratio_first = excess
    baseline = jnp.where(first, first_baseline, state.baseline)
    ratio = jnp.where(first, ratio_first,
                      numerics.safe_div(excess, baseline))  # §3.2.
    # Eq. 9 in log space; the largest logit is 0 after the shift.
    logits = jnp.log(state.weights) + jnp.minimum(
        learning_rate * ratio, -_LOGIT_FLOOR)
    logits = jnp.maximum(logits - jnp.max(logits), _LOGIT_FLOOR)
    stepped = jax.nn.softmax(logits)
    weights = jnp.where(in_warmup, state.weights, stepped)
    # A zero baseline is replaced by the first positive excess risk after it.
    baseline = jnp.where(in_warmup | (baseline > 0), baseline, excess)

    used = jnp.where(finite, weights, jnp.nan)
    shared_updates = gramian_lib.weighted_sum(used, shared)
    specific_updates = base.own_task_updates(specific)
    new_state = ExcessMTLState(
        weights=weights, root_sum_squares=roots, baseline=baseline,
        warmup_sum=warmup_sum, count=optax.safe_increment(count))
    return base.StepResult(shared_updates, specific_updates, new_state,
                           finite, state_guarded=True)

  return base.task_transformation(num_tasks, name, init, step,
                                  task_specific=task_specific)
