"""A user's train.py for the emitted launch commands (tests/test_dist_launch.py): the tiny llama built
from its config, trained for a few AdamW steps on fixed token batches under the process group the
launcher set up (env:// from torchrun), with DDP or FSDP2 (`--strategy`). Rank 0 prints one JSON line:
the world size, its threads and the loss of every step."""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", choices=("ddp", "fsdp2"), default="ddp")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    from transformers import AutoModelForCausalLM

    from perfscale.specs import load_model_spec

    torch.manual_seed(0)  # the same initial weights on every rank
    model = AutoModelForCausalLM.from_config(load_model_spec("perfscale-tiny-llama").config_object())
    if args.strategy == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(3, 1000, (2, 32), generator=torch.Generator().manual_seed(rank))  # this rank's shard
    losses = []
    for _ in range(args.steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(float(mean) / world)
    if rank == 0:
        print(json.dumps({"world_size": world, "threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"),
                          "losses": losses}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
