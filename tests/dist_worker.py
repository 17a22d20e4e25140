"""Run by tests/test_distributed.py, in one process or as each rank of `torchrun --nproc-per-node 2`: fine-tune the
recipes given (3 optimizer steps each) with edgetune's training loop and save, per rank, what every step saw and
left: the rows of this rank's shard, the global loss, and every trainable weight.

    python tests/dist_worker.py OUT RECIPE [RECIPE ...]
"""

import sys
from pathlib import Path

import torch

from edgetune.core.recipe import load_recipe
from edgetune.engines.finetune import finetune
from edgetune.engines.training import launched_world
from edgetune.pipeline import prepare


def main(out: Path, recipes: list[str]) -> None:
    rank, world = launched_world()
    for path in recipes:
        p = prepare(load_recipe(path))
        steps: list[dict] = []

        def on_step(trainer, result, steps=steps) -> None:
            steps.append(
                {
                    "world": trainer.world,
                    "rank": trainer.rank,
                    "shard": result.shard["input_ids"].tolist(),
                    "loss": result.loss,
                    "weights": {k: v.detach().clone() for k, v in trainer.model.named_parameters() if v.requires_grad},
                }
            )

        r = p.recipe
        block = r.quantize.int4_block_size if r.training.int4_aware_epochs else None
        finetune(
            p.source,
            p.data,
            r.lora,
            p.adapter,
            r.training,
            p.task,
            out / f"{Path(path).parent.name}-world{world}",
            out / f"{Path(path).parent.name}-world{world}-ckpt",
            int4_block=block,
            progress=False,
            on_step=on_step,
        )
        torch.save(steps, out / f"{Path(path).parent.name}-world{world}-rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
