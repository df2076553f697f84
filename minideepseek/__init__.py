"""minideepseek: DeepSeek-V3 and R1, rebuilt from their parts to be read and run."""

from .config import ConfigError, ModelConfig
from .model import Transformer
from .params import count_parameters

__all__ = ["ConfigError", "ModelConfig", "Transformer", "count_parameters"]
__version__ = "0.1.0"
