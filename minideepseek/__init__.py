"""minideepseek: DeepSeek-V3 and R1, rebuilt from their parts to be read and run."""

from .balancing import expert_load_stats, update_expert_biases
from .checkpoint import CheckpointError, convert_checkpoint, load_pretrained, save_pretrained, verify_checkpoint
from .config import ConfigError, ModelConfig
from .fp8_linear import FP8Linear, to_fp8
from .generation import generate
from .losses import LossOutput, compute_loss
from .model import Transformer
from .params import count_parameters
from .speed import configure_speed
from .train import TrainConfig, load_trained, train_model

__all__ = ["ConfigError", "ModelConfig", "Transformer", "count_parameters", "generate",
           "CheckpointError", "load_pretrained", "save_pretrained", "verify_checkpoint", "convert_checkpoint",
           "TrainConfig", "train_model", "load_trained",
           "LossOutput", "compute_loss", "update_expert_biases", "expert_load_stats", "configure_speed",
           "FP8Linear", "to_fp8"]
__version__ = "0.1.0"
