"""mtl_optax: multi-task loss and gradient balancing as optax transformations.

Every method that is a weighting lives in ``mtl_optax.weightings`` and has a
factory ``mtl_optax.<name>(num_tasks, ...)`` that is exactly
``mtl_optax.balancer(num_tasks, mtl_optax.weightings.<name>(...))``; the
methods that need the per-coordinate gradients are transformations.
"""

from mtl_optax import weightings
from mtl_optax._src.base import BalancerState
from mtl_optax._src.base import LossBalancer
from mtl_optax._src.base import TaskStats
from mtl_optax._src.base import Weighting
from mtl_optax._src.base import WeightsState
from mtl_optax._src.base import balancer
from mtl_optax._src.base import balancer_factory
from mtl_optax._src.base import last_weights
from mtl_optax._src.base import weigh_losses
from mtl_optax._src.cross_batch import cross_balancer
from mtl_optax._src.cross_batch import cross_balancer_factory
from mtl_optax._src.cross_batch import cross_gramian
from mtl_optax._src.db_mtl import DBMTLState
from mtl_optax._src.db_mtl import db_mtl
from mtl_optax._src.engine import value_and_balanced_grad
from mtl_optax._src.engine import value_and_gramian
from mtl_optax._src.gramian import gramian
from mtl_optax._src.gramian import weighted_sum
from mtl_optax._src.mgda_ub import representation_balanced_grads
from mtl_optax._src.solvers.min_norm import min_norm_weights
from mtl_optax._src.task_grads import value_and_task_grads

# Transformations over the stacked per-task gradients, states and helpers
# of the methods.
from mtl_optax._src.methods.auto_lambda import AutoLambdaState
from mtl_optax._src.methods.auto_lambda import auto_lambda
from mtl_optax._src.methods.adatask import AdaTaskState
from mtl_optax._src.methods.adatask import adatask
from mtl_optax._src.methods.cosmos import cosmos_value
from mtl_optax._src.methods.dwa import DWAState
from mtl_optax._src.methods.excess_mtl import ExcessMTLState
from mtl_optax._src.methods.excess_mtl import excess_mtl
from mtl_optax._src.methods.famo import FAMOState
from mtl_optax._src.methods.go4align import GO4AlignState
from mtl_optax._src.methods.graddrop import GradDropState
from mtl_optax._src.methods.graddrop import graddrop
from mtl_optax._src.methods.gradient_ema import GradientEmaState
from mtl_optax._src.methods.gradient_ema import gradient_ema
from mtl_optax._src.methods.gradnorm import GradNormState
from mtl_optax._src.methods.gradvac import GradVacState
from mtl_optax._src.methods.igb import IGBState
from mtl_optax._src.methods.imtl import IMTLState
from mtl_optax._src.methods.log_scaling import log_scaling
from mtl_optax._src.methods.m_config import MConFIGState
from mtl_optax._src.methods.m_config import m_config
from mtl_optax._src.methods.metabalance import MetaBalanceState
from mtl_optax._src.methods.moco import MoCoState
from mtl_optax._src.methods.moco import moco
from mtl_optax._src.methods.modo import MoDoState
from mtl_optax._src.methods.mtadam import MTAdamState
from mtl_optax._src.methods.mtadam import mtadam
from mtl_optax._src.methods.nash_mtl import NashMTLState
from mtl_optax._src.methods.normalize_task_grads import normalize_task_grads
from mtl_optax._src.methods.pbi import pbi_value
from mtl_optax._src.methods.pcd import PCDState
from mtl_optax._src.methods.pcgrad import PCGradState
from mtl_optax._src.methods.rlw import RLWState
from mtl_optax._src.methods.sdmgrad import SDMGradState
from mtl_optax._src.methods.smoothed import SmoothedState
from mtl_optax._src.methods.stch import stch_value
from mtl_optax._src.methods.task_tensioner import TaskTensionerState
from mtl_optax._src.methods.trimmed_mean import TrimmedMeanState
from mtl_optax._src.methods.trimmed_mean import trimmed_mean
from mtl_optax._src.methods.uncertainty_weighting import UncertaintyWeightingState

# One balancer factory per weighting: balancer(T, weightings.<name>(...)).
from mtl_optax._src.methods.gradvac import gradvac_balancer as gradvac
aligned_mtl = balancer_factory(weightings.aligned_mtl)
cagrad = balancer_factory(weightings.cagrad)
central_direction = balancer_factory(weightings.central_direction)
config = balancer_factory(weightings.config)
cosmos = balancer_factory(weightings.cosmos)
dualproj = balancer_factory(weightings.dualproj)
dwa = balancer_factory(weightings.dwa)
equal_weighting = balancer_factory(weightings.equal_weighting)
fairgrad = balancer_factory(weightings.fairgrad)
famo = balancer_factory(weightings.famo)
fixed_weighting = balancer_factory(weightings.fixed_weighting)
gls = balancer_factory(weightings.gls)
go4align = balancer_factory(weightings.go4align)
gradnorm = balancer_factory(weightings.gradnorm)
igb = balancer_factory(weightings.igb)
imtl = balancer_factory(weightings.imtl)
krum = balancer_factory(weightings.krum)
logse = balancer_factory(weightings.logse)
max_norm_weighting = balancer_factory(weightings.max_norm_weighting)
metabalance = balancer_factory(weightings.metabalance)
mgda = balancer_factory(weightings.mgda)
nash_mtl = balancer_factory(weightings.nash_mtl)
pbi = balancer_factory(weightings.pbi)
pcd = balancer_factory(weightings.pcd)
pcgrad = balancer_factory(weightings.pcgrad)
pmgda = balancer_factory(weightings.pmgda)
rlw = balancer_factory(weightings.rlw)
smoothed = balancer_factory(weightings.smoothed)
stch = balancer_factory(weightings.stch)
task_tensioner = balancer_factory(weightings.task_tensioner)
uncertainty_weighting = balancer_factory(weightings.uncertainty_weighting)
upgrad = balancer_factory(weightings.upgrad)
modo = cross_balancer_factory(weightings.modo)
sdmgrad = cross_balancer_factory(weightings.sdmgrad)

__all__ = [
    'AdaTaskState',
    'AutoLambdaState',
    'BalancerState',
    'DBMTLState',
    'DWAState',
    'ExcessMTLState',
    'FAMOState',
    'GO4AlignState',
    'GradDropState',
    'GradNormState',
    'GradVacState',
    'GradientEmaState',
    'IGBState',
    'IMTLState',
    'LossBalancer',
    'MConFIGState',
    'MetaBalanceState',
    'MoCoState',
    'MoDoState',
    'MTAdamState',
    'NashMTLState',
    'PCDState',
    'PCGradState',
    'RLWState',
    'SDMGradState',
    'SmoothedState',
    'TaskStats',
    'TaskTensionerState',
    'TrimmedMeanState',
    'UncertaintyWeightingState',
    'Weighting',
    'WeightsState',
    'aligned_mtl',
    'adatask',
    'auto_lambda',
    'balancer',
    'balancer_factory',
    'cagrad',
    'central_direction',
    'config',
    'cosmos',
    'cosmos_value',
    'cross_balancer',
    'cross_balancer_factory',
    'cross_gramian',
    'db_mtl',
    'dualproj',
    'dwa',
    'equal_weighting',
    'excess_mtl',
    'fairgrad',
    'famo',
    'fixed_weighting',
    'gls',
    'go4align',
    'graddrop',
    'gradient_ema',
    'gradnorm',
    'gradvac',
    'gramian',
    'igb',
    'imtl',
    'krum',
    'last_weights',
    'log_scaling',
    'logse',
    'm_config',
    'max_norm_weighting',
    'metabalance',
    'mgda',
    'min_norm_weights',
    'moco',
    'modo',
    'mtadam',
    'nash_mtl',
    'normalize_task_grads',
    'pbi',
    'pbi_value',
    'pcd',
    'pcgrad',
    'pmgda',
    'representation_balanced_grads',
    'rlw',
    'sdmgrad',
    'smoothed',
    'stch',
    'stch_value',
    'task_tensioner',
    'trimmed_mean',
    'uncertainty_weighting',
    'upgrad',
    'value_and_balanced_grad',
    'value_and_gramian',
    'value_and_task_grads',
    'weigh_losses',
    'weighted_sum',
    'weightings',
]

__version__ = '0.1.0'
