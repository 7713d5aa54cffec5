"""Under ``torchrun --nproc_per_node 2``: rank 1 raises inside Muon's step while rank 0 waits in the update
all_gather. torchrun must end the job non-zero with rank 1's error; the 60 s collective timeout is the
backstop if it did not."""

import datetime
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlp_worker  # noqa: E402

import optimizers.distributed  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    if rank == 1:
        def broken(*args, **kwargs):
            raise ValueError("rank 1 failed on purpose")

        optimizers.distributed.DDPMuon.route = broken
    model = mlp_worker.build_model()
    optimizer = mlp_worker.build_optimizer(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    mlp_worker.train(ddp, optimizer, 0, 2, rank, world_size)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
