"""minideepseek: DeepSeek-V3 and R1, rebuilt from their parts to be read and run.

Read it in chapter order (``chapters/NN_*/lesson.md``); each idea of the papers has one module:

    chapter                 paper concept                                    module
    00 the big picture      every hyperparameter; exact parameter counts     config.py, params.py
    01 RMSNorm              root-mean-square normalisation                   norm.py
    02 RoPE and YaRN        rotary positions, YaRN context extension         rope.py
    03 MLA                  Multi-head Latent Attention, decoupled RoPE      attention.py
    04 DeepSeekMoE          shared + routed experts, sigmoid gate,           moe.py
                            group-limited routing
                            auxiliary-loss-free balancing                    balancing.py
    05 the model            pre-norm blocks, dense first, the Transformer    block.py, model.py
    06 loading              hub / official / FP8 checkpoint formats          checkpoint.py, checkpoint_names.py
    07 MTP                  Multi-Token Prediction; the training loss        mtp.py, losses.py
    08 training             data, optimizer step, the training run           data.py, optim.py, train.py
                            run folders, device policy, fast paths           runfolder.py, run_plots.py,
                                                                             device.py, speed.py
    09 inference            the two KV caches, weight absorption,            kv_cache.py, generation.py,
                            sampling, speculative decoding with MTP          chat.py
    10 FP8                  128x128 block scaling, FP32 promotion,           fp8.py, fp8_gemm.py,
                            FP8 training; the chapter's experiments          fp8_linear.py, fp8_experiments.py
    11 R1                   verifiable rewards, GRPO, cold start,            reasoning_task.py, grpo.py, r1.py
                            distillation
    12 scaling out          tensor / expert parallelism, torchrun,           parallel.py, distributed.py,
                            DualPipe, communication volume                   dualpipe.py, comm_volume.py,
                                                                             torchtitan_adapter.py
    14 V3.2 sparse attn     lightning indexer, top-k sparse MLA, its cache,  indexer.py, sparse_attention.py,
                            the indexer's two training stages, cost          dsa_train.py

Around them: ``cli.py`` (the ``minideepseek`` command), ``doctor.py``, ``grade.py`` (the
exercises), ``bench/`` (measurements against baselines) and ``plots/`` (every chapter's figures).

``import minideepseek`` loads the model's modules only; the pipelines (``train``, ``checkpoint``)
and what they need (tokenizers, safetensors, matplotlib, FSDP) load when one of their names is
first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .balancing import expert_load_stats, update_expert_biases
from .config import ConfigError, ModelConfig
from .fp8_linear import FP8Linear, to_fp8
from .generation import generate
from .losses import LossOutput, compute_loss
from .model import Transformer
from .params import count_parameters
from .speed import configure_speed

# Names whose modules import heavier libraries, loaded on first use (PEP 562): name -> module.
_LAZY = {
    "CheckpointError": "checkpoint", "convert_checkpoint": "checkpoint", "load_pretrained": "checkpoint",
    "save_pretrained": "checkpoint", "verify_checkpoint": "checkpoint",
    "TrainConfig": "train", "load_trained": "train", "train_model": "train",
}

if TYPE_CHECKING:
    from .checkpoint import CheckpointError, convert_checkpoint, load_pretrained, save_pretrained, verify_checkpoint
    from .train import TrainConfig, load_trained, train_model


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ConfigError", "ModelConfig", "Transformer", "count_parameters", "generate",
           "CheckpointError", "load_pretrained", "save_pretrained", "verify_checkpoint", "convert_checkpoint",
           "TrainConfig", "train_model", "load_trained",
           "LossOutput", "compute_loss", "update_expert_biases", "expert_load_stats", "configure_speed",
           "FP8Linear", "to_fp8"]
__version__ = "0.1.0"
