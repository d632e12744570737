"""mtl_optax: multi-task loss and gradient balancing as optax transformations."""

from mtl_optax._src.methods.aligned_mtl import aligned_mtl
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
from mtl_optax._src.methods.cagrad import cagrad
from mtl_optax._src.methods.central_direction import central_direction
from mtl_optax._src.methods.config import config
from mtl_optax._src.methods.db_mtl import DBMTLState
from mtl_optax._src.methods.db_mtl import db_mtl
from mtl_optax._src.methods.dualproj import dualproj
from mtl_optax._src.methods.dwa import DWAState
dwa = balancer_factory(weightings.dwa)
equal_weighting = balancer_factory(weightings.equal_weighting)
from mtl_optax._src.methods.fairgrad import fairgrad
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
from mtl_optax._src.methods.gradvac import gradvac
from mtl_optax._src.gramian import gramian
from mtl_optax._src.gramian import weighted_sum
from mtl_optax._src.methods.imtl import IMTLState
from mtl_optax._src.methods.imtl import imtl
from mtl_optax._src.methods.log_scaling import log_scaling
from mtl_optax._src.methods.logse import logse
max_norm_weighting = balancer_factory(weightings.max_norm_weighting)
mgda = balancer_factory(weightings.mgda)
from mtl_optax._src.mgda_ub import representation_balanced_grads
from mtl_optax._src.min_norm import min_norm_weights
from mtl_optax._src.methods.nash_mtl import NashMTLState
from mtl_optax._src.methods.nash_mtl import nash_mtl
from mtl_optax._src.methods.pcgrad import PCGradState
from mtl_optax._src.methods.pcgrad import pcgrad
from mtl_optax._src.methods.rlw import RLWState
from mtl_optax._src.methods.rlw import rlw
from mtl_optax._src.methods.smoothed import SmoothedState
smoothed = balancer_factory(weightings.smoothed)
from mtl_optax._src.task_grads import value_and_task_grads
from mtl_optax._src.methods.task_tensioner import TaskTensionerState
task_tensioner = balancer_factory(weightings.task_tensioner)
from mtl_optax._src.methods.uncertainty_weighting import UncertaintyWeightingState
from mtl_optax._src.methods.uncertainty_weighting import uncertainty_weighting
upgrad = balancer_factory(weightings.upgrad)

__version__ = '0.1.0'
