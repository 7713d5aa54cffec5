"""Muon ablation sweeps (the script users know): forwards to ``muon-ablate`` (mamba_trainer.ablate).

    python muon_ablations.py --training_preset muon_demo --model_size hybrid-tiny --max_steps 200 \\
        --lr 1/64,1/32,1/16 --momentum 7/8,15/16 --ns_steps 4,8,16
    python muon_ablations.py --report results/<sweep>_<time>

See ``python muon_ablations.py --help`` for every option.
"""

import sys

from mamba_trainer.ablate import main

if __name__ == "__main__":
    sys.exit(main())
