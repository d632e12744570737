"""Auto-Lambda: task weights learned from a validation batch's gradient."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mtl_optax._src import base
from mtl_optax._src import gramian as gramian_lib
from mtl_optax._src import numerics

# The meta-gradient's entries are clipped here so that Adam's second moment
# (their squares) stays in the float32 range; real meta-gradients are far
# smaller.
_META_GRAD_LIMIT = 1e18


class AutoLambdaState(NamedTuple):
  weights: jax.Array  # shape=[T], dtype=float32; λ, the task weights
  # (weight_init at first)
  optimizer_state: Any  # the meta optimizer's state for λ

  def task_weights(self) -> jax.Array:
    """``[T]`` weights of the last finite update ``Σ_t λ_t g_t``."""
    return self.weights


def _checked_val_leaves(name: str, task_leaves: list,
                        val_grads: tuple[list, list] | None) -> list:
  """``val_grads``' leaves (shared, then task-specific), checked against
  the task gradients' (``task_leaves`` in the same order)."""
  if val_grads is None:
    raise ValueError(
        f'{name} needs the validation gradient: call update(task_grads, '
        'state, params, val_grads=grads) with grads a tree like the '
        'parameters.')
  leaves = val_grads[0] + val_grads[1]
  for val, task in zip(leaves, task_leaves):
    if jnp.shape(val) != jnp.shape(task)[1:]:
      raise ValueError(
          f'{name}: a val_grads leaf has shape {jnp.shape(val)}, but the '
          f'parameter has shape {jnp.shape(task)[1:]}.')
    if not jnp.issubdtype(jnp.result_type(val), jnp.floating):
      raise ValueError(f'{name}: val_grads has dtype {jnp.result_type(val)}; '
                       'gradients must be floating point.')
  return leaves


def _task_dots(task_leaves: list, val_leaves: list) -> tuple[jax.Array,
                                                              jax.Array]:
  """``J g_val``: ``[T]`` dot products, one contraction per leaf, float32.

  Both sides are divided by a power of two before the products, so that
  entries of any float32 size neither overflow nor flush to zero in them.

  Returns:
    ``(products, finite)``: the products multiplied back to their true
    scale (where that overflows, ±inf), and whether every entry of both
    sides was finite (a non-finite entry makes its leaf's products
    non-finite, whatever it is multiplied by).
  """
  task_scale = gramian_lib.power_of_two_scale(task_leaves)
  val_scale = gramian_lib.power_of_two_scale(val_leaves)
  total = None
  for task, val in zip(task_leaves, val_leaves):
    # Half-precision leaves are scaled in float32: 1/scale may not fit.
    task = task.astype(jnp.promote_types(task.dtype, jnp.float32))
    val = val.astype(jnp.promote_types(val.dtype, jnp.float32))
    task = task * (1.0 / task_scale).astype(task.dtype)
    val = val * (1.0 / val_scale).astype(val.dtype)
    axes = tuple(range(val.ndim))
    # On a mesh with Explicit axes the [T] result of a contraction over
    # sharded axes must be named: replicated (an all-reduce), as the Gramian.
    mesh = jax.typeof(task).sharding.mesh
    dots = lax.dot_general(
        task, val, ((tuple(a + 1 for a in axes), axes), ((), ())),
        precision=lax.Precision.HIGHEST,
        preferred_element_type=jnp.float32,
        out_sharding=jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec()))
    total = dots if total is None else total + dots
  # Task-sharded gradients give a task-sharded [T] vector: the weights must
  # be replicated before they contract with the gradients.
  assert total is not None  # check_shared: at least one leaf.
  total = gramian_lib.replicated(total)
  finite = numerics.all_finite(total, task_scale, val_scale)
  # One factor at a time: a zero product stays 0 (never 0 · inf).
  return (total * task_scale) * val_scale, finite


def auto_lambda(
    num_tasks: int,
    *,
    learning_rate: float = 1e-4,
    weight_init: float = 0.1,
    optimizer: optax.GradientTransformation | None = None,
    task_specific: base.TaskSpecific = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Auto-Lambda (first order): weights moved along ``J g_val`` each update.

  Liu, Liang, Davison and Johns, "Auto-Lambda: Disentangling Dynamic Task
  Relationships" (TMLR 2022); official code ``lorenmt/auto-lambda``
  (``auto_lambda.py``). The task weights ``λ`` are meta-parameters chosen
  so that one training step on ``Σ_t λ_t L_t`` lowers the validation loss
  of the primary tasks, ``L_val(θ − α Σ_t λ_t g_t)``. Its derivative in
  ``λ_t`` is ``−α g_t · g_val`` (the code's ``mw.grad = −α · hessian``,
  with the product taken by finite differences), i.e. ``−α J g_val`` with
  ``J`` the stacked task gradients. Each update:

  ``λ ← λ + optimizer step on −J g_val``  (``λ = weight_init`` at first),

  ``d = Σ_t λ_t g_t``  with the new ``λ`` (the code updates ``λ`` first,
  then takes the model step with it).

  **First order.** The code evaluates ``g_val`` at the virtual parameters
  ``θ' = θ − α(Σ_t λ_t g_t + momentum + weight decay)``; here ``val_grads``
  is whatever gradient the caller passes, normally the validation loss's at
  the current parameters (``θ' ≈ θ``), which saves the virtual step. The
  code's meta optimizer is Adam (learning rate 1e-4 for NYUv2, 3e-5 for
  CityScapes; ``weight_init`` 0.1), the default here. Adam is invariant to
  a positive factor on its gradients (up to its ε), so the model's learning
  rate ``α`` is left out; pass ``optimizer=optax.sgd(α · β)`` for a plain
  step of size ``β``. ``λ`` is neither normalised nor clipped, as in the
  code. Meta-gradient entries beyond ±1e18 are clipped, so that Adam's
  second moment stays finite.

  The products run over every leaf, shared and task-specific, as the code
  differentiates through all parameters: ``J g_val`` is one contraction per
  leaf. Task-specific leaves get ``λ_t g_t`` of their task ``t``: the code
  differentiates ``Σ_t λ_t L_t`` through every parameter (the balancers
  leave them unweighted).

  **The update needs** ``val_grads=``, the gradient of the primary tasks'
  validation loss, a tree like the parameters (the docs page has the
  training step). The code draws the validation batch from the training set
  with another order.

  Args:
    num_tasks: T.
    learning_rate: the default Adam meta optimizer's learning rate, > 0.
    weight_init: the initial weight of every task (0.1 in the code).
    optimizer: the optax optimizer that moves ``λ``; it receives
      ``−J g_val`` as the gradient. Default: ``optax.adam(learning_rate)``.
    task_specific: leaves that belong to one task (see :func:`balancer`).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`AutoLambdaState`; its ``update`` needs ``val_grads``.
    ``state.weights`` is ``λ``.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import mtl_optax as mtl
    >>> tx = mtl.auto_lambda(2, optimizer=optax.sgd(0.1))
    >>> grads = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> val_grads = jnp.array([2.0, -1.0])  # J g_val = [2, -1]
    >>> updates, state = tx.update(grads, tx.init(jnp.zeros(2)),
    ...                            val_grads=val_grads)
    >>> state.weights  # 0.1 + 0.1 · [2, -1]
    Array([0.3, 0. ], dtype=float32)
  """
  base.check_num_tasks(num_tasks)
  base.check_range('learning_rate', learning_rate, 0.0, low_open=True)
  base.check_range('weight_init', weight_init)
  name = 'auto_lambda'
  if optimizer is None:
    optimizer = optax.adam(learning_rate)

  def init(shared_params):
    del shared_params
    weights = jnp.full([num_tasks], weight_init, jnp.float32)
    return AutoLambdaState(weights=weights,
                           optimizer_state=optimizer.init(weights))

  def step(shared, specific, losses, state, inputs_finite, val_grads):
    del losses
    base.check_shared(name, shared)
    val_leaves = _checked_val_leaves(name, shared + specific, val_grads)
    # λ is a constant to autodiff, as the code's model step treats it. The
    # products run over every leaf, the task-specific ones too, as the
    # code's validation gradient does.
    products, finite = _task_dots(
        [lax.stop_gradient(leaf) for leaf in shared + specific],
        [lax.stop_gradient(leaf) for leaf in val_leaves])
    # The code's mw.grad = −α · hessian, with hessian = J g_val (α dropped).
    meta_grads = jnp.clip(-products, -_META_GRAD_LIMIT, _META_GRAD_LIMIT)
    steps, optimizer_state = optimizer.update(
        meta_grads, state.optimizer_state, state.weights)
    weights = optax.apply_updates(state.weights, steps).astype(jnp.float32)
    finite = finite & inputs_finite
    used = jnp.where(finite, weights, jnp.nan)
    shared_updates = gramian_lib.weighted_sum(used, shared)
    # The code's loss is Σ_t λ_t L_t: a task's own leaves get λ_t g_t too.
    specific_updates = gramian_lib.weighted_sum(weights, specific)
    return base.StepResult(
        shared_updates, specific_updates,
        AutoLambdaState(weights=weights, optimizer_state=optimizer_state),
        finite)

  return base.task_transformation(num_tasks, name, init, step,
                                  task_specific=task_specific,
                                  extra_inputs=('val_grads',))
