"""mtl_optax: multi-task loss and gradient balancing as optax transformations."""

from mtl_optax._src.base import LossBalancer
from mtl_optax._src.base import TaskStats
from mtl_optax._src.base import WeightsState
from mtl_optax._src.base import balancer
from mtl_optax._src.equal_weighting import equal_weighting
from mtl_optax._src.fixed_weighting import fixed_weighting
from mtl_optax._src.gramian import gramian
from mtl_optax._src.gramian import weighted_sum
from mtl_optax._src.logse import logse
from mtl_optax._src.task_grads import value_and_task_grads
from mtl_optax._src.uncertainty_weighting import UncertaintyWeightingState
from mtl_optax._src.uncertainty_weighting import uncertainty_weighting

__version__ = '0.1.0'
