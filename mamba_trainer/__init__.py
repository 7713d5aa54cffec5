"""mamba_trainer: train Mamba and hybrid language models with Muon on the Hugging Face Trainer."""

__version__ = "0.1.0"
