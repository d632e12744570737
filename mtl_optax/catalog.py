"""Every public balancing method, with the properties it promises.

One list shared by the tests (the property suite, the engine, sharding and
x64 checks), the benchmarks and the docs: a new method joins all of them with
one ``Method(...)`` line in ``METHODS``. Import it as ``mtl_optax.catalog``
(the package does not import it itself).

``properties`` lists what the method promises (the README's method table says
the same): ``'non_conflicting'`` (``g_t · d >= 0`` for every task),
``'permutation_invariant'`` (permuting the tasks permutes the weights and
leaves the update unchanged) and ``'scale_linear'`` (scaling every gradient
by ``c > 0`` scales the update by ``c``); ``'min_norm'`` marks methods whose
weights are the min-norm point of the convex hull (the suite checks KKT).
"""

import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtl_optax as mtl

NON_CONFLICTING = 'non_conflicting'
PERMUTATION_INVARIANT = 'permutation_invariant'
SCALE_LINEAR = 'scale_linear'
MIN_NORM = 'min_norm'  # the weights solve min_{w in simplex} wᵀGw (KKT checked)


class Method(NamedTuple):
  name: str
  factory: Callable[..., Any]  # factory(num_tasks, **kwargs)
  kwargs: dict  # float entries are exercised under optax.inject_hyperparams
  needs_losses: bool
  properties: frozenset
  static_args: tuple = ()  # kwargs that inject_hyperparams must not touch
  make_weighting: Callable[..., Any] | None = None  # when not by name
  stacked_only: bool = False  # not a weighting even if its name is one
  min_tasks: int = 1  # the smallest T the method accepts (e.g. Krum's f + 3)
  # The transformation is the whole optimizer (MTAdam, AdaTask): its output
  # is the parameter update, so nothing is chained after it and it takes a
  # learning_rate of its own.
  replaces_optimizer: bool = False
  # Offered by the benchmark trainer (mtl_bench: `--method NAME`, `--compare
  # all`); False for the variants that exist for the tests only.
  benchmark: bool = True

  def make(self, num_tasks: int, **overrides):
    return self.factory(num_tasks, **{**self.kwargs, **overrides})

  @property
  def weighting(self) -> Callable[[], Any] | None:
    """``() -> mtl.Weighting`` of the method, or None if it is no weighting."""
    if self.stacked_only:
      return None
    make = self.make_weighting or getattr(
        mtl.weightings, self.factory.__name__, None)
    if make is None:
      return None
    return lambda: make(**self.kwargs)


def _props(*names):
  return frozenset(names)


def _fixed_weighting(num_tasks, *, task_specific=None):
  return mtl.fixed_weighting(num_tasks, np.arange(1.0, num_tasks + 1),
                             task_specific=task_specific)


def _smoothed_mgda(num_tasks, *, alpha=0.9, task_specific=None):
  return mtl.smoothed(num_tasks, mtl.weightings.mgda(), alpha=alpha,
                      task_specific=task_specific)


def _task_tensioner_upgrad(num_tasks, *, alpha=0.3, period=1,
                           task_specific=None):
  return mtl.task_tensioner(num_tasks, base=mtl.weightings.upgrad(reg_eps=0.0),
                            alpha=alpha, period=period,
                            task_specific=task_specific)


def _auto_lambda_on_training_grads(num_tasks, *, learning_rate=1e-4,
                                   weight_init=0.1, task_specific=None):
  """Auto-Lambda with the training batch as its validation batch.

  ``val_grads`` is ``Σ_t g_t``, the gradient of every task's loss on the
  batch being trained on (every task primary): the suite and the trainer
  pass no validation batch. The authors' code draws its validation batch
  from the training set too, in another order.
  """
  tx = mtl.auto_lambda(num_tasks, learning_rate=learning_rate,
                       weight_init=weight_init, task_specific=task_specific)

  def update(task_grads, state, params=None, **extra_args):
    extra_args.pop('val_grads', None)
    val_grads = jax.tree.map(lambda leaf: jnp.sum(leaf, axis=0), task_grads)
    return tx.update(task_grads, state, params, val_grads=val_grads,
                     **extra_args)

  return optax.GradientTransformationExtraArgs(tx.init, update)


def _normalized_mgda(num_tasks, *, normalization='l2', loss_floor=1e-8,
                     task_specific=None):
  """The pre-transform in front of a balancer: MGDA on normalised gradients."""
  return optax.chain(
      mtl.normalize_task_grads(num_tasks, normalization, loss_floor=loss_floor,
                               task_specific=task_specific),
      mtl.mgda(num_tasks, task_specific=task_specific))


METHODS = [
    Method('equal_weighting', mtl.equal_weighting, {'reduction': 'mean'},
           False, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('fixed_weighting', _fixed_weighting, {}, False,
           _props(SCALE_LINEAR),
           make_weighting=lambda: mtl.weightings.fixed_weighting(
               np.arange(1.0, 5.0))),
    Method('logse', mtl.logse, {'loss_floor': 1e-8}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('uncertainty_weighting.kendall', mtl.uncertainty_weighting,
           {'form': 'kendall', 'learning_rate': 1e-2}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('uncertainty_weighting.liebel', mtl.uncertainty_weighting,
           {'form': 'liebel', 'learning_rate': 1e-2}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('uncertainty_weighting.bentaieb', mtl.uncertainty_weighting,
           {'form': 'bentaieb', 'learning_rate': 1e-2}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('max_norm_weighting', mtl.max_norm_weighting, {'eps': 1e-8},
           False, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),  # Up to ε.
    Method('db_mtl', mtl.db_mtl,
           {'beta': 0.9, 'beta_sigma': 0.5, 'eps': 1e-8}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),  # Up to ε.
    Method('dwa', mtl.dwa, {'temperature': 2.0, 'period': 1}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('rlw', mtl.rlw, {'key': 0}, False, _props(SCALE_LINEAR)),
    Method('gls', mtl.gls, {'loss_floor': 1e-8}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('famo', mtl.famo, {'learning_rate': 0.025, 'weight_decay': 1e-3},
           True, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('gradnorm', mtl.gradnorm, {'alpha': 1.5, 'learning_rate': 0.025},
           True, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('cagrad', mtl.cagrad, {'c': 0.5}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('fairgrad', mtl.fairgrad, {'alpha': 1.0}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT)),
    # G α = 1/α on the raw Gramian: scaling the gradients by c scales α by
    # 1/c, so the update is scale-invariant, not scale-linear (as FairGrad).
    Method('nash_mtl', mtl.nash_mtl, {'max_norm': 0.0}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT)),
    Method('gradvac', mtl.gradvac, {'target_rate': 0.01}, False,
           _props(SCALE_LINEAR)),
    # One target per parameter leaf and pair (LibMTL's all_matrix).
    # Per-leaf targets need per-leaf Gramians: a transformation, not a
    # weighting of one Gramian.
    Method('gradvac.leaf', mtl.gradvac, {'target_rate': 0.01, 'group': 'leaf'},
           False, _props(SCALE_LINEAR), stacked_only=True),
    Method('graddrop', mtl.graddrop, {'leak': 0.0}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('mgda', mtl.mgda, {'normalization': 'none'}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT, SCALE_LINEAR,
                  MIN_NORM)),
    # Normalised MGDA: Ĝ chooses α, the raw gradients are combined, so no
    # non-conflict promise (mgda docstring, Decision).
    Method('mgda.l2', mtl.mgda, {'normalization': 'l2'}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('mgda.loss+', mtl.mgda, {'normalization': 'loss+'}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # The paper's Frank-Wolfe (Algorithm 2) only approaches the min-norm
    # point: no KKT or non-conflict promise.
    Method('mgda.frank_wolfe', mtl.mgda,
           {'normalization': 'none', 'solver': 'frank_wolfe'}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('central_direction', mtl.central_direction, {}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # Unit-length tensions: not linear under scaling (after period steps).
    Method('task_tensioner', mtl.task_tensioner,
           {'base': 'central_direction', 'alpha': 0.3, 'period': 1}, True,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT)),
    Method('task_tensioner.mgda', mtl.task_tensioner,
           {'base': 'mgda', 'alpha': 0.3, 'period': 1}, True,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT)),
    # Any weighting as the base: UPGrad (exact projection) is non-conflicting.
    Method('task_tensioner.upgrad', _task_tensioner_upgrad,
           {'alpha': 0.3, 'period': 1}, True,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT)),
    Method('pcgrad', mtl.pcgrad, {'key': 0}, False, _props(SCALE_LINEAR)),
    Method('imtl.gradient', mtl.imtl, {'mode': 'gradient'}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('imtl.loss', mtl.imtl, {'mode': 'loss', 'learning_rate': 1e-2},
           True, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('imtl.hybrid', mtl.imtl, {'mode': 'hybrid', 'learning_rate': 1e-2},
           True, _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # reg_eps=0: the default ridge (1e-4, TorchJD's) allows conflicts of up to
    # reg_eps·tr(G)·w_t, beyond the suite's tolerance when the update is short.
    Method('upgrad', mtl.upgrad, {'reg_eps': 0.0}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # reg_eps=0: the default ridge (1e-4, TorchJD's) allows conflicts of up to
    # reg_eps·tr(G)·w_t, beyond the suite's tolerance when the update is short.
    Method('dualproj', mtl.dualproj, {'reg_eps': 0.0}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('aligned_mtl', mtl.aligned_mtl, {}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # Non-conflicting when the gradients are linearly independent (T <= P).
    Method('config', mtl.config, {}, False,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # Smoothed weights keep the inner weighting's permutation invariance and
    # scale linearity; min-norm and non-conflict hold at the first step only.
    Method('smoothed.mgda', _smoothed_mgda, {'alpha': 0.9}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # Scalarisations with the default uniform preference; their weights
    # depend on the losses only.
    Method('stch', mtl.stch, {'mu': 1.0}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('stch.small_mu', mtl.stch, {'mu': 0.01}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR), benchmark=False),
    Method('cosmos', mtl.cosmos, {'cosine_penalty': 1.0}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('pbi', mtl.pbi, {'theta': 5.0}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # Scale-linear from the first step with warm-up (uniform weights, then
    # excess risks divided by a baseline of the same scale).
    Method('excess_mtl', mtl.excess_mtl,
           {'learning_rate': 1e-2, 'warmup_steps': 1}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # warmup_steps=0 steps with the raw excess risks: not scale-linear.
    Method('excess_mtl.no_warmup', mtl.excess_mtl,
           {'learning_rate': 1.0, 'warmup_steps': 0}, False,
           _props(PERMUTATION_INVARIANT), benchmark=False),
    # Unit gradients: the update does not scale with the gradients.
    Method('moco', mtl.moco, {'tracking_rate': 0.5, 'learning_rate': 0.1},
           True,
           _props(PERMUTATION_INVARIANT)),
    Method('moco.softmax', mtl.moco,
           {'tracking_rate': 0.5, 'learning_rate': 0.1,
            'weight_update': 'softmax'}, True,
           _props(PERMUTATION_INVARIANT)),
    # Pre-transform + MGDA: MGDA is non-conflicting for the normalised
    # gradients, hence for the raw ones (positive factors). Unit gradients do
    # not depend on the scale; loss-normalised ones are linear in it.
    Method('normalize_task_grads.l2+mgda', _normalized_mgda,
           {'normalization': 'l2'},
           False, _props(NON_CONFLICTING, PERMUTATION_INVARIANT)),
    Method('normalize_task_grads.loss+mgda', _normalized_mgda,
           {'normalization': 'loss', 'loss_floor': 1e-8}, True,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('normalize_task_grads.loss++mgda', _normalized_mgda,
           {'normalization': 'loss+'}, True,
           _props(NON_CONFLICTING, PERMUTATION_INVARIANT)),
    # Run with one batch here (the suite passes no task_grads_2/3): the
    # weights then come from J Jᵀ, the deterministic variant.
    Method('sdmgrad', mtl.sdmgrad, {'lambda_': 0.3}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # One absolute step on the weights: not linear under scaling.
    Method('modo', mtl.modo, {'learning_rate': 1e-3, 'rho': 0.1}, False,
           _props(PERMUTATION_INVARIANT)),
    # eps=0: the default ε = 1e-8 in the norms' moving average is what keeps
    # PCD from being exactly linear under scaling. Task 1 is the primary one:
    # not permutation-invariant.
    Method('pcd', mtl.pcd, {'eps': 0.0}, False, _props(SCALE_LINEAR)),
    # num_byzantine=0 at T = 4 scores by the 2 nearest neighbours; with 1
    # neighbour the closest pair always ties, and ties go by task index.
    Method('krum', mtl.krum, {'num_byzantine': 0, 'num_selected': 1}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR), min_tasks=3),
    Method('krum.multi', mtl.krum, {'num_byzantine': 0, 'num_selected': 2},
           False, _props(PERMUTATION_INVARIANT, SCALE_LINEAR), min_tasks=3),
    Method('trimmed_mean', mtl.trimmed_mean, {'trim_number': 1}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR), min_tasks=3),
    # Task 0 is the target: not permutation-invariant. Norm ratios do not
    # change with the scale.
    Method('metabalance', mtl.metabalance,
           {'relax_factor': 0.7, 'beta': 0.9}, False, _props(SCALE_LINEAR)),
    # base_steps=1: the suite's second step already uses the softmax.
    Method('igb', mtl.igb, {'base_steps': 1, 'loss_floor': 1e-8}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    Method('go4align', mtl.go4align,
           {'num_groups': 2, 'learning_rate': 1e-4}, True,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # Adam on J g_val: scale-linear up to Adam's ε.
    Method('auto_lambda', _auto_lambda_on_training_grads,
           {'learning_rate': 1e-4, 'weight_init': 0.1}, False,
           _props(PERMUTATION_INVARIANT, SCALE_LINEAR)),
    # Whole optimizers (their output is −η times Adam-like steps): invariant
    # to the gradients' scale, not linear in it. MTAdam's anchor is task 0.
    Method('mtadam', mtl.mtadam, {'learning_rate': 1e-3}, False, _props(),
           replaces_optimizer=True),
    Method('adatask', mtl.adatask, {'learning_rate': 1e-3}, False,
           _props(PERMUTATION_INVARIANT), replaces_optimizer=True),
    # The entry moves every momentum at every step: with the paper's round
    # robin (the option, and the factory's default) the output is zero until
    # every task has a momentum, T steps, so one step would test nothing.
    # The promises are the default's: the round robin depends on the tasks'
    # order (update_all_tasks=True is permutation-invariant, which
    # tests/test_m_config.py checks) and the Adam-like scaling makes the
    # output scale-invariant.
    Method('m_config', mtl.m_config,
           {'b1': 0.9, 'b2': 0.999, 'update_all_tasks': True}, False,
           _props()),
    Method('m_config.round_robin', mtl.m_config, {'b1': 0.9, 'b2': 0.999},
           False, _props()),
    # One target per layer (key path without its last key) and pair:
    # LibMTL's all_layer.
    Method('gradvac.layer', mtl.gradvac, {'target_rate': 0.01, 'group': 'layer'},
           False, _props(SCALE_LINEAR), stacked_only=True),
    # The correction step mixes unit vectors: not linear under scaling.
    # Permutation-invariant with the default (uniform) preference where the
    # linear program's optimum is unique (generic gradients).
    Method('pmgda', mtl.pmgda, {'h_tol': 1e-2, 'sigma': 0.95}, True,
           _props(PERMUTATION_INVARIANT)),
    # New methods above this line, one Method(...) each.
]

_NAMES = frozenset(method.name for method in METHODS)


def is_option(method: Method) -> bool:
  """Whether ``method`` is another option of an entry listed under its own name.

  ``mgda.l2`` beside ``mgda``: the same factory with other arguments. Tests
  that check how a method is built or scales (the everyday subset, sharding,
  the engine, 512 tasks) run each method once; options change the small
  T x T problem, which the value tests cover.
  """
  base = re.split(r'[.+]', method.name)[0]
  return base != method.name and base in _NAMES
