"""Muon for Mamba and hybrid models: orthogonalization backends, the optimizer, the parameter split.

    from optimizers import create_muon_optimizer
    optimizer = create_muon_optimizer(model, lr=3e-3, backend="newtonschulz5")
"""

from optimizers.errors import MuonConfigError
from optimizers.factory import MuonFactory, create_muon_optimizer
from optimizers.functional import momentum_at_step
from optimizers.optimizer import Muon
from optimizers.orthogonalize import BACKENDS, get_backend, orthogonalize
from optimizers.param_split import split_parameters

__all__ = ["Muon", "MuonFactory", "create_muon_optimizer", "split_parameters", "orthogonalize", "get_backend", "BACKENDS",
           "momentum_at_step", "MuonConfigError"]
