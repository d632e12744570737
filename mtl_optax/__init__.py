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
cosmos = balancer_factory(weightings.cosmos)
from mtl_optax._src.methods.cosmos import cosmos_value
from mtl_optax._src.methods.db_mtl import DBMTLState
from mtl_optax._src.methods.db_mtl import db_mtl
dualproj = balancer_factory(weightings.dualproj)
from mtl_optax._src.methods.dwa import DWAState
dwa = balancer_factory(weightings.dwa)
equal_weighting = balancer_factory(weightings.equal_weighting)
from mtl_optax._src.methods.excess_mtl import ExcessMTLState
from mtl_optax._src.methods.excess_mtl import excess_mtl
fairgrad = balancer_factory(weightings.fairgrad)
from mtl_optax._src.methods.famo import FAMOState
from mtl_optax._src.methods.famo import famo
from mtl_optax._src.methods.fixed_weighting import fixed_weighting
from mtl_optax._src.methods.gls import gls
from mtl_optax._src.methods.graddrop import GradDropState
from mtl_optax._src.methods.graddrop import graddrop
from mtl_optax._src.methods.gradient_ema import GradientEmaState
from mtl_optax._src.methods.gradient_ema import gradient_ema
from mtl_optax._src.methods.gradnorm import GradNormState
from mtl_optax._src.methods.gradnorm import gradnorm
from mtl_optax._src.methods.gradvac import GradVacState
gradvac = balancer_factory(weightings.gradvac)
from mtl_optax._src.gramian import gramian
from mtl_optax._src.gramian import weighted_sum
from mtl_optax._src.methods.imtl import IMTLState
from mtl_optax._src.methods.imtl import imtl
from mtl_optax._src.methods.log_scaling import log_scaling
from mtl_optax._src.methods.logse import logse
from mtl_optax._src.methods.max_norm_weighting import max_norm_weighting
mgda = balancer_factory(weightings.mgda)
from mtl_optax._src.mgda_ub import representation_balanced_grads
from mtl_optax._src.min_norm import min_norm_weights
from mtl_optax._src.methods.moco import MoCoState
from mtl_optax._src.methods.moco import moco
from mtl_optax._src.methods.nash_mtl import NashMTLState
nash_mtl = balancer_factory(weightings.nash_mtl)
from mtl_optax._src.methods.pcgrad import PCGradState
pbi = balancer_factory(weightings.pbi)
from mtl_optax._src.methods.pbi import pbi_value
pcgrad = balancer_factory(weightings.pcgrad)
from mtl_optax._src.methods.rlw import RLWState
from mtl_optax._src.methods.rlw import rlw
stch = balancer_factory(weightings.stch)
from mtl_optax._src.methods.stch import stch_value
from mtl_optax._src.task_grads import value_and_task_grads
from mtl_optax._src.engine import value_and_balanced_grad
from mtl_optax._src.engine import value_and_gramian
from mtl_optax._src.methods.task_tensioner import TaskTensionerState
from mtl_optax._src.methods.task_tensioner import task_tensioner
from mtl_optax._src.methods.uncertainty_weighting import UncertaintyWeightingState
from mtl_optax._src.methods.uncertainty_weighting import uncertainty_weighting
upgrad = balancer_factory(weightings.upgrad)

__version__ = '0.1.0'
