"""What a method file imports: the contract, the checks and the skeleton.

The core is split by responsibility, each module small and below the methods:

* contract.py: :class:`TaskStats`, :class:`Weighting`, :class:`BalancerState`;
* validation.py: the one-line ``ValueError`` checks of hyper-parameters and
  inputs (the solvers import this module only);
* leaves.py: the task-specific mask, the shared/specific split, T x P states;
* transformation.py: the one skeleton of every transformation over stacked
  per-task gradients (:func:`task_transformation`);
* balancer.py: the one weighting step (:func:`weigh_and_guard`) and the
  balancer around it, the loss path and :func:`last_weights`.

Methods write ``from mtl_optax._src import base`` and ``base.<name>``; this
module re-exports those names and holds no code of its own.
"""

# ruff: noqa: F401  (re-exports)
from mtl_optax._src.balancer import LossBalancer
from mtl_optax._src.balancer import REMOVAL_VERSION
from mtl_optax._src.balancer import balancer
from mtl_optax._src.balancer import balancer_factory
from mtl_optax._src.balancer import last_weights
from mtl_optax._src.balancer import weigh_and_guard
from mtl_optax._src.balancer import weigh_losses
from mtl_optax._src.balancer import weighted_balancer
from mtl_optax._src.contract import BalancerState
from mtl_optax._src.contract import TaskStats
from mtl_optax._src.contract import Weighting
from mtl_optax._src.contract import WeightsState
from mtl_optax._src.contract import own_task_weights
from mtl_optax._src.contract import preference_weighting
from mtl_optax._src.leaves import TaskSpecific
from mtl_optax._src.leaves import cast_like
from mtl_optax._src.leaves import merge_leaves
from mtl_optax._src.leaves import own_task_updates
from mtl_optax._src.leaves import split_leaves
from mtl_optax._src.leaves import stacked_zeros
from mtl_optax._src.leaves import task_specific_flags
from mtl_optax._src.transformation import StepResult
from mtl_optax._src.transformation import keep_if_not_finite
from mtl_optax._src.transformation import task_transformation
from mtl_optax._src.validation import check_choice
from mtl_optax._src.validation import check_num_tasks
from mtl_optax._src.validation import check_positive_int
from mtl_optax._src.validation import check_range
from mtl_optax._src.validation import check_shared
from mtl_optax._src.validation import check_stacked_state
from mtl_optax._src.validation import check_task_grads
from mtl_optax._src.validation import check_task_losses
from mtl_optax._src.validation import check_task_vector
from mtl_optax._src.validation import loss_vector
from mtl_optax._src.validation import preference_vector
from mtl_optax._src.validation import renamed
from mtl_optax._src.validation import task_vector
