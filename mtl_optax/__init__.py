"""mtl_optax: multi-task loss and gradient balancing as optax transformations."""

from mtl_optax._src.base import LossBalancer
from mtl_optax._src.base import TaskStats
from mtl_optax._src.base import WeightsState
from mtl_optax._src.base import BalancerState
from mtl_optax._src.base import Weighting
from mtl_optax._src.base import balancer
from mtl_optax._src.base import balancer_factory
from mtl_optax._src.base import last_weights
from mtl_optax._src.base import weigh_losses
from mtl_optax import weightings
aligned_mtl = balancer_factory(weightings.aligned_mtl)
cagrad = balancer_factory(weightings.cagrad)
central_direction = balancer_factory(weightings.central_direction)
config = balancer_factory(weightings.config)
from mtl_optax._src.cross_batch import cross_balancer
from mtl_optax._src.cross_batch import cross_balancer_factory
from mtl_optax._src.cross_batch import cross_gramian
from mtl_optax._src.methods.db_mtl import DBMTLState
from mtl_optax._src.methods.db_mtl import db_mtl
dualproj = balancer_factory(weightings.dualproj)
from mtl_optax._src.methods.dwa import DWAState
dwa = balancer_factory(weightings.dwa)
equal_weighting = balancer_factory(weightings.equal_weighting)
fairgrad = balancer_factory(weightings.fairgrad)
from mtl_optax._src.methods.famo import FAMOState
famo = balancer_factory(weightings.famo)
fixed_weighting = balancer_factory(weightings.fixed_weighting)
gls = balancer_factory(weightings.gls)
from mtl_optax._src.methods.graddrop import GradDropState
from mtl_optax._src.methods.graddrop import graddrop
from mtl_optax._src.methods.gradient_ema import GradientEmaState
from mtl_optax._src.methods.gradient_ema import gradient_ema
from mtl_optax._src.methods.gradnorm import GradNormState
gradnorm = balancer_factory(weightings.gradnorm)
from mtl_optax._src.methods.gradvac import GradVacState
gradvac = balancer_factory(weightings.gradvac)
from mtl_optax._src.gramian import gramian
from mtl_optax._src.gramian import weighted_sum
from mtl_optax._src.methods.imtl import IMTLState
imtl = balancer_factory(weightings.imtl)
from mtl_optax._src.methods.log_scaling import log_scaling
krum = balancer_factory(weightings.krum)
logse = balancer_factory(weightings.logse)
max_norm_weighting = balancer_factory(weightings.max_norm_weighting)
mgda = balancer_factory(weightings.mgda)
from mtl_optax._src.mgda_ub import representation_balanced_grads
from mtl_optax._src.min_norm import min_norm_weights
from mtl_optax._src.methods.modo import MoDoState
modo = cross_balancer_factory(weightings.modo)
from mtl_optax._src.methods.nash_mtl import NashMTLState
nash_mtl = balancer_factory(weightings.nash_mtl)
from mtl_optax._src.methods.pcd import PCDState
pcd = balancer_factory(weightings.pcd)
from mtl_optax._src.methods.pcgrad import PCGradState
pcgrad = balancer_factory(weightings.pcgrad)
from mtl_optax._src.methods.rlw import RLWState
rlw = balancer_factory(weightings.rlw)
from mtl_optax._src.methods.sdmgrad import SDMGradState
sdmgrad = cross_balancer_factory(weightings.sdmgrad)
from mtl_optax._src.task_grads import value_and_task_grads
from mtl_optax._src.engine import value_and_balanced_grad
from mtl_optax._src.engine import value_and_gramian
from mtl_optax._src.methods.task_tensioner import TaskTensionerState
from mtl_optax._src.methods.task_tensioner import task_tensioner
from mtl_optax._src.methods.trimmed_mean import TrimmedMeanState
from mtl_optax._src.methods.trimmed_mean import trimmed_mean
from mtl_optax._src.methods.uncertainty_weighting import UncertaintyWeightingState
uncertainty_weighting = balancer_factory(weightings.uncertainty_weighting)
upgrad = balancer_factory(weightings.upgrad)

__version__ = '0.1.0'
