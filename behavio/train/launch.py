"""How a training run uses the machine: one device, or the processes of a launcher with DDP.

- ``behavio train`` alone trains on one device, even on a multi-GPU machine (the HF Trainer would
  otherwise wrap the model in DataParallel: a batch per GPU, the anchor's index tensor split) and
  says how to launch on every GPU.
- ``accelerate launch -m behavio train`` (or ``torchrun -m behavio train``) runs DDP: every process
  holds the whole (4-bit) model and an adapter copy, gradients are averaged; the main process writes
  the run directory; fill, on-policy answers and checks are shared out across processes.
- FSDP and DeepSpeed are refused before anything loads. With QLoRA they need the 4-bit storage dtype
  to match the other weights (``bnb_4bit_quant_storage``), no ``device_map``, no fp32 upcast of the
  non-quantized layers, the model built after the DeepSpeed config (``zero.Init``), and adapter saves
  gathered into a full state dict; none of that can be run here (no GPU), so behavio does not claim it.
"""

from __future__ import annotations

import os

from behavio.errors import BehavioError

SHARDED_LAUNCHERS = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}
DDP_COMMAND = "accelerate launch --multi_gpu --num_processes {n} -m behavio train SPEC [key=value ...]"


def refuse_sharded_launch() -> None:
    """BehavioError when an accelerate config asks for FSDP or DeepSpeed (ZeRO): only DDP is supported."""
    asked = [name for var, name in SHARDED_LAUNCHERS.items() if os.environ.get(var, "").lower() in ("true", "1")]
    if asked:
        raise BehavioError(
            f"{asked[0]} is not supported: behavio trains with DDP only (every process holds the whole model; with "
            "QLoRA that is the 4-bit base plus a small adapter). Sharding a 4-bit model needs a matching quant "
            "storage dtype, no device_map and full-state-dict adapter saves, which behavio has not been tested "
            f"with. Launch DDP instead: {DDP_COMMAND.format(n='N')} (an accelerate config without "
            f"{asked[0].lower()} settings)")


def single_device_note(cuda: bool, processes: int) -> str | None:
    """What to tell a user who runs ``behavio train`` without a launcher on a machine with several GPUs."""
    if not cuda or processes > 1:
        return None
    import torch

    count = torch.cuda.device_count()
    if count < 2:
        return None
    return (f"training on one GPU (cuda:{torch.cuda.current_device()}) of {count}; to train on all of them: "
            + DDP_COMMAND.format(n=count))


def one_device(args) -> None:
    """Keep a Trainer on one device when no launcher started the process (no DataParallel over every GPU)."""
    from transformers.training_args import ParallelMode

    if args.parallel_mode != ParallelMode.DISTRIBUTED and args.n_gpu > 1:
        args._n_gpu = 1  # the attribute the Trainer itself sets to keep a model-parallel model off DataParallel
