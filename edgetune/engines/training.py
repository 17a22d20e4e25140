"""One training loop for fine-tuning and distillation, on HF accelerate: the same code on a CPU, one GPU, several
GPUs (DDP, or FSDP with training.strategy: fsdp, on GPUs only: accelerate shards models only on accelerators) and
several machines.

Processes come from a standard launcher (`torchrun ... -m edgetune build R`, `accelerate launch -m edgetune build R`,
or `edgetune build --processes N`, which runs torchrun). Every rank computes the same global batches (the
recipe's batch_size: the effective batch whatever the process count) and takes its share of each; each share is
cut again into `gradient_accumulation` micro-batches. A micro-batch's mean loss is weighted by its share of the
global batch's items (examples, or target tokens for a causal LM), so that the gradient DDP averages is the
global batch's mean-loss gradient, as one process with the whole batch computes it. Only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from edgetune.core.errors import EdgetuneError

# what torchrun and accelerate launch tell each process
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE")


def launched_world() -> tuple[int, int]:
    """(rank, world size) as a launcher (torchrun, accelerate launch) set them; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(device: str) -> str:
    """'cpu' or 'cuda' for training.device (auto: CUDA when a GPU is present)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise EdgetuneError(
            "training.device: cuda, but torch sees no CUDA GPU (torch "
            f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); set training.device: cpu or auto"
        )
    return device


def use_bf16(precision: str, device: str = "cpu") -> bool:
    """bf16 mixed precision for 'bf16', or for 'auto' where the device computes bf16 natively: GPUs that report
    bf16 support, CPUs with AMX or AVX512-BF16 (elsewhere bf16 is emulated and slower than float32)."""
    if precision != "auto":
        return precision == "bf16"
    if device == "cuda":
        import torch

        return bool(torch.cuda.is_bf16_supported())
    from edgetune.runtime.cpu import NATIVE_BF16, cpu_flags

    return bool(NATIVE_BF16 & cpu_flags())


def is_rank0() -> bool:
    """Whether this process is rank 0 of a launch (or a plain process)."""
    return launched_world()[0] == 0


def _from_rank0(obj: Any) -> Any:
    """Rank 0's `obj` on every rank of the process group (pickled)."""
    from accelerate.utils import broadcast_object_list

    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


class Team:
    """The processes of one launch: rank 0 runs the build; the others join the stages that train (see
    pipeline.build) and write nothing. A plain process is a team of one."""

    def __init__(self, device: str = "cpu") -> None:
        self.rank, self.world = launched_world()
        if self.world > 1:
            from accelerate import PartialState

            # gloo on CPU, NCCL on GPUs; under torchrun, accelerate needs cpu=True for CPU training, or every rank
            # would train alone
            PartialState(cpu=resolve_device(device) == "cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def disband(self) -> None:
        """After the last stage that trains: leave the process group and forget the launch, so that this process
        goes on alone and the processes it starts (bench workers, the model builder) are not taken for ranks."""
        if self.world == 1:
            return
        import torch.distributed as dist
        from accelerate.state import AcceleratorState

        if dist.is_initialized():
            dist.destroy_process_group()
        AcceleratorState._reset_state(reset_partial_state=True)
        for var in LAUNCH_VARS:
            os.environ.pop(var, None)
        self.world = 1

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        return _from_rank0(obj) if self.world > 1 else obj


@dataclass(frozen=True)
class Setup:
    """Where and how to train (the recipe's training section): none of it changes what is computed beyond
    floating-point order, so none of it is in a stage key except precision."""

    device: str = "auto"
    precision: str = "fp32"
    gradient_accumulation: int = 1
    strategy: str = "ddp"

    @classmethod
    def of(cls, training: Any) -> Setup:
        return cls(training.device, training.precision, training.gradient_accumulation, training.strategy)

    def resolved(self) -> tuple[str, bool]:
        """('cpu' or 'cuda', whether training runs in bf16 mixed precision) on this machine."""
        device = resolve_device(self.device)
        return device, use_bf16(self.precision, device)


def _accelerator(setup: Setup, device: str, bf16: bool) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # accelerate keeps one state per process and refuses a second Accelerator with other settings; builds in one
    # process (tests, the Python API) each make their own. Under a launcher the process group stays.
    AcceleratorState._reset_state(reset_partial_state=launched_world()[1] == 1)
    kwargs: dict[str, Any] = {}
    if setup.strategy == "fsdp" and launched_world()[1] > 1 and not os.environ.get("ACCELERATE_USE_FSDP"):
        from accelerate import FullyShardedDataParallelPlugin

        # FSDP2 (torch's fully_shard): each transformer block (the model's _no_split_modules, which accelerate
        # reads) is one shard unit, the rest goes to the root. Every rank loads the same weights and draws the same
        # adapter init (one seed), so no broadcast is needed. Unmeasured: no GPU machine was lent to this work.
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap", state_dict_type="FULL_STATE_DICT"
        )
    return Accelerator(
        cpu=device == "cpu",
        mixed_precision="bf16" if bf16 else "no",
        gradient_accumulation_steps=setup.gradient_accumulation,
        **kwargs,
    )


def _loss_module(model: Any, loss: Callable[[Any, dict], Any]) -> Any:
    """`model` with forward(batch) = loss(model, batch): what DDP/FSDP wrap, so that every training forward
    passes through the wrapper (gradient synchronisation) whatever the task's loss calls inside the model."""
    import torch

    class LossModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            # FSDP wraps each transformer block of the inner model
            inner = model.get_base_model() if hasattr(model, "get_base_model") else model
            self._no_split_modules = getattr(inner, "_no_split_modules", None)

        def forward(self, batch: dict) -> Any:
            return loss(self.model, batch)

    return LossModule()


def split_batch(batch: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """`batch` (tensors of the same first dimension) cut into `parts` consecutive micro-batches (some empty when
    it has fewer rows), each trimmed to its longest sequence (right padding)."""
    rows = next(iter(batch.values())).shape[0]
    bounds = [rows * i // parts for i in range(parts + 1)]
    out = []
    for a, b in zip(bounds, bounds[1:]):
        micro = {k: v[a:b] for k, v in batch.items()}
        mask = micro.get("attention_mask")
        if mask is not None and b > a and mask.dim() == 2:
            length = int(mask.sum(dim=1).max())
            width = mask.shape[1]
            micro = {k: v[:, :length] if v.dim() == 2 and v.shape[1] == width else v for k, v in micro.items()}
        out.append(micro)
    return out if rows else [batch] * parts


@dataclass
class StepResult:
    loss: float  # the global batch's mean loss (the same on every rank)
    shard: dict[str, Any]  # the first micro-batch this rank trained on (for tests and logs)


class Trainer:
    """AdamW with a linear warmup schedule over `total_steps` optimizer steps, on `model`'s trainable parameters.

    `loss(model, batch)` is the mean loss of a batch of `items(batch)` items. `distributed=False` trains in this
    process only, even under a launcher (distillation runs on rank 0 alone)."""

    def __init__(
        self,
        model: Any,
        loss: Callable[[Any, dict], Any],
        items: Callable[[dict], int],
        setup: Setup,
        *,
        lr: float,
        weight_decay: float,
        warmup_fraction: float,
        total_steps: int,
        seed: int = 0,
        distributed: bool = True,
        log: Callable[[str], None] = lambda s: None,
    ) -> None:
        import torch
        from transformers import get_linear_schedule_with_warmup

        self.device, self.bf16 = setup.resolved()
        self.acc = _accelerator(setup, self.device, self.bf16)
        self.distributed = distributed and self.acc.num_processes > 1
        self.rank = self.acc.process_index if self.distributed else 0
        self.world = self.acc.num_processes if self.distributed else 1
        self.accumulation = setup.gradient_accumulation
        from accelerate.utils import DistributedType

        fsdp = self.acc.distributed_type == DistributedType.FSDP
        self.strategy = ("fsdp" if fsdp else "ddp") if self.distributed else "single"
        if self.distributed and setup.strategy == "fsdp" and not fsdp:
            # the finetune stage refuses fsdp on CPU up front (accelerate 1.16 keeps MULTI_CPU, i.e. DDP, there)
            log(
                f"training.strategy is fsdp, but accelerate set up {self.acc.distributed_type.value} on this "
                "machine: every process holds the whole model (DDP)"
            )
        self.model, self.items = model, items
        module = _loss_module(model, loss)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        if self.distributed:
            self.wrapped, self.optimizer = self.acc.prepare(module, optimizer)
            # dropout draws differently on each rank; the initial weights were drawn before, the same everywhere
            # (and DDP broadcasts rank 0's anyway)
            torch.manual_seed(seed * 100_003 + self.rank)
        else:
            module.to(self.acc.device)
            self.wrapped, self.optimizer = module, self.acc.prepare_optimizer(optimizer, device_placement=False)
        # stepped once per optimizer step by us: accelerate's wrapper would step it once per process
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer.optimizer, int(total_steps * warmup_fraction), total_steps
        )
        what = {"single": "1 process", "ddp": f"{self.world} processes (DDP)", "fsdp": f"{self.world} processes (FSDP)"}
        log(
            f"training on {self.acc.device} ({what[self.strategy]}), "
            f"{'bfloat16 mixed precision' if self.bf16 else 'float32'}"
            + (f", {self.accumulation} micro-batches per step" if self.accumulation > 1 else "")
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (a decision every rank must take alike)."""
        return _from_rank0(obj) if self.distributed else obj

    @property
    def evaluates_everywhere(self) -> bool:
        """Whether evaluation between epochs must run on every rank: under FSDP each forward gathers the shards
        (a collective), so all ranks evaluate alike; otherwise rank 0 alone evaluates."""
        return self.strategy == "fsdp"

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Evaluation between epochs on the inner model: the training precision's autocast, and under FSDP the
        root's parameters (embeddings, head, final norm) gathered, since only the root's own forward would gather
        them; each block gathers its own in its forward."""
        with self.acc.autocast():
            if self.strategy != "fsdp":
                yield
                return
            self.wrapped.unshard()
            try:
                yield
            finally:
                self.wrapped.reshard()

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.acc.device) if hasattr(v, "to") else v for k, v in batch.items()}

    def step(self, batch: dict[str, Any], after_update: Callable[[], None] | None = None) -> StepResult:
        """One optimizer step on the global batch `batch`: this rank's share, in micro-batches. `after_update`
        runs after the optimizer step, before the gradients are cleared (AdaLoRA's rank allocator reads them)."""
        import torch

        parts = split_batch(batch, self.world * self.accumulation)
        total = sum(self.items(p) for p in parts if next(iter(p.values())).shape[0]) or 1
        mine = parts[self.rank * self.accumulation : (self.rank + 1) * self.accumulation]
        local = 0.0
        for micro in mine:
            empty = next(iter(micro.values())).shape[0] == 0 or self.items(micro) == 0
            if empty:  # every rank runs every micro-step (DDP's collectives); this one with weight 0
                micro = split_batch(batch, 1)[0]
            n = 0 if empty else self.items(micro)
            with self.acc.accumulate(self.wrapped):
                with self.acc.autocast():  # the forward pass only, as autocast wants
                    mean = self.wrapped(self.to_device(micro))
                # exact 1.0 for one process with the whole batch: the same gradient as mean.backward()
                self.acc.backward(mean * (n * self.world * self.accumulation / total))
            local += float(mean.detach()) * n
        self.optimizer.step()
        self.scheduler.step()
        if after_update is not None:
            after_update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.distributed:
            summed = self.acc.reduce(torch.tensor([local], dtype=torch.float64, device=self.acc.device), "sum")
            local = float(summed.item())
        return StepResult(local / total, mine[0])

    def wait(self) -> None:
        if self.distributed:
            self.acc.wait_for_everyone()

    def model_state(self) -> dict[str, Any]:
        """The trained model's full state dict (every rank calls it: FSDP gathers the shards, and only rank 0 may
        get them)."""
        if not self.distributed:
            return self.model.state_dict()
        state = self.acc.get_state_dict(self.wrapped)
        return {k.removeprefix("model."): v for k, v in state.items()}

    def state(self) -> dict[str, Any] | None:
        """Optimizer, schedule and every rank's random state, for a checkpoint (every rank calls it; rank 0
        gets the state, the others None)."""
        import torch

        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            opt = get_optimizer_state_dict(
                self.wrapped, self.optimizer.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        else:
            opt = self.optimizer.optimizer.state_dict()
        rng = {"torch": torch.get_rng_state()}
        if self.device == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state()
        rngs = [rng]
        if self.distributed:
            from accelerate.utils import gather_object

            rngs = gather_object([rng])
        if not self.is_main:
            return None
        return {"optimizer": opt, "scheduler": self.scheduler.state_dict(), "rng": rngs, "world": self.world}

    def load_state(self, state: dict[str, Any], log: Callable[[str], None] = lambda s: None) -> None:
        """Restore what `state()` saved (every rank calls it, with rank 0's state)."""
        import torch

        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(
                self.wrapped,
                self.optimizer.optimizer,
                state["optimizer"],
                options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
            )
        else:
            self.optimizer.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["world"] != self.world:
            log(
                f"resuming with {self.world} processes a run checkpointed with {state['world']}: the same batches "
                "and weights, but dropout draws anew"
            )
            return
        rng = state["rng"][self.rank]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device == "cuda":
            torch.cuda.set_rng_state(rng["cuda"])


def enable_gradient_checkpointing(model: Any) -> bool:
    """Recompute activations in the backward pass instead of keeping them (transformers' own switch); False for a
    model that does not support it."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        return False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return True
