"""`from optimizers.muon import Muon` and the other names this module has always offered, re-exported from the files
that now hold them: the optimizer (`optimizers.optimizer`), its factory (`optimizers.factory`), the AdamW side
(`optimizers.adamw`) and its report (`optimizers.report`). New code can import from those directly."""

from optimizers.adamw import MIN_8BIT_SIZE
from optimizers.factory import MuonFactory, create_muon_optimizer
from optimizers.optimizer import ADAMW_LR_RATIO, NONFINITE, Muon
from optimizers.report import fused_mode_of

__all__ = ["Muon", "MuonFactory", "create_muon_optimizer", "fused_mode_of", "ADAMW_LR_RATIO", "NONFINITE",
           "MIN_8BIT_SIZE"]
