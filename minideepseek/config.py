"""Every hyperparameter of DeepSeek-V3 in one dataclass.

The field names are those of the official inference code's ``ModelArgs``
(deepseek-ai/DeepSeek-V3, ``inference/model.py``), so a reader can hold this file
next to theirs. The fields after ``scale_fmt`` are what training needs and the
official inference code does not have.

Two JSON forms exist for the same model:

* the official inference JSON (``inference/configs/config_671B.json``): a subset of
  ``ModelArgs`` fields, everything else left at its default;
* the Hugging Face hub ``config.json`` (``hidden_size``, ``first_k_dense_replace``,
  ``n_group``, ``rope_scaling`` ...).

``ModelConfig.from_json`` reads both; ``to_hf_dict`` writes the hub form and
``to_dict`` the official form.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .runfolder import read_json
from .validation import Fields, UserError, is_number


class ConfigError(UserError):
    """A config that cannot describe a DeepSeek-V3 model. The message names the field."""


@dataclass(frozen=True)
class ModelConfig:
    # --- official ModelArgs, in the official order (defaults are the official ones) ---
    max_batch_size: int = 8
    max_seq_len: int = 4096 * 4
    dtype: str = "bf16"  # storage format of the weights: "bf16" or "fp8" (128x128 blocks)
    scale_fmt: str | None = None  # None, or "ue8m0" (power-of-two FP8 scales, V3.1)
    vocab_size: int = 102400
    dim: int = 2048
    inter_dim: int = 10944  # hidden size of the dense MLP in the first layers
    moe_inter_dim: int = 1408  # hidden size of one expert
    n_layers: int = 27
    n_dense_layers: int = 1
    n_heads: int = 16
    n_routed_experts: int = 64
    n_shared_experts: int = 2
    n_activated_experts: int = 6
    n_expert_groups: int = 1
    n_limited_groups: int = 1
    score_func: str = "softmax"
    route_scale: float = 1.0
    q_lora_rank: int = 0  # 0: a single wq instead of wq_a -> q_norm -> wq_b
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    original_seq_len: int = 4096
    rope_theta: float = 10000.0
    rope_factor: float = 40
    beta_fast: int = 32
    beta_slow: int = 1
    mscale: float = 1.0
    # DeepSeek-V3.2 sparse attention (DSA): the lightning indexer of every attention layer (indexer.py).
    # index_n_heads = 0 means no indexer: a DeepSeek-V3 model, every other field unchanged.
    index_n_heads: int = 0  # 64 in V3.2 (the official ModelArgs default, for V3.2 configs only)
    index_head_dim: int = 128  # width of one indexer query head and of the single indexer key
    index_topk: int = 2048  # keys each query attends to
    # --- what training needs (not in the official ModelArgs) ---
    gate_bias: bool = False  # aux-loss-free balancing: a float32 bias that only selects experts
    n_mtp_layers: int = 0  # Multi-Token Prediction depth D (hub: num_nextn_predict_layers)
    norm_eps: float = 1e-6
    init_std: float = 0.006  # the V3 report initialises every weight with N(0, 0.006)
    bias_update_speed: float = 0.001  # gamma in the report's bias update (eq. 16 and 4.2)
    balance_loss_alpha: float = 0.0001  # alpha of the sequence-wise balance loss (eq. 17)
    mtp_loss_weight: float = 0.3  # lambda of the MTP loss (eq. 25)
    tie_word_embeddings: bool = False
    # --- ablation switches (chapter 13). The defaults are DeepSeek-V3; any other value builds a baseline
    # that the ablation studies compare V3's choice against. Baselines train and evaluate, but have no
    # published checkpoint layout and no cached decoding.
    attention: str = "mla"  # "mla" (V3), or "mha" / "gqa" / "mqa": per-head K and V with RoPE on the whole head
    n_kv_heads: int = 0  # key/value heads of "gqa" (must divide n_heads); mha uses n_heads, mqa 1
    dense_ffn_dim: int = 0  # > 0: every layer that would be DeepSeekMoE is a dense SwiGLU of this hidden size
    expert_balance_loss_alpha: float = 0.0  # the V2 / GShard expert-level auxiliary loss over the whole batch

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ derived
    @property
    def qk_head_dim(self) -> int:
        """Width of one query/key head: the non-rotated part plus the rotated part (192 for V3)."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def uses_yarn(self) -> bool:
        """The official rule: YaRN is on only when the model serves more than it was trained on."""
        return self.max_seq_len > self.original_seq_len

    @property
    def experts_per_group(self) -> int:
        return self.n_routed_experts // self.n_expert_groups

    @property
    def has_indexer(self) -> bool:
        """DeepSeek-V3.2: every attention layer (the MTP one too) selects its keys with a lightning indexer."""
        return self.index_n_heads > 0

    @property
    def kv_heads(self) -> int:
        """Key/value heads of the standard-attention baselines (mha: n_heads, gqa: n_kv_heads, mqa: 1)."""
        return {"mha": self.n_heads, "gqa": self.n_kv_heads, "mqa": 1}.get(self.attention, self.n_heads)

    @property
    def kv_cache_values(self) -> int:
        """Numbers cached per token per layer: MLA's latent and shared rotated key (576 in V3), or the
        baselines' keys and values of their ``kv_heads`` heads."""
        if self.attention == "mla":
            return self.kv_lora_rank + self.qk_rope_head_dim
        return self.kv_heads * (self.qk_head_dim + self.v_head_dim)

    @property
    def is_v3_architecture(self) -> bool:
        """False for the ablation baselines (another attention, dense FFN layers), which no checkpoint format holds."""
        return self.attention == "mla" and self.dense_ffn_dim == 0

    def is_moe_layer(self, layer_id: int) -> bool:
        """Layers ``0 .. n_dense_layers-1`` use a dense MLP, all later ones DeepSeekMoE (or, in the
        dense ablation baseline, a dense MLP of ``dense_ffn_dim``)."""
        return layer_id >= self.n_dense_layers and self.dense_ffn_dim == 0

    def ffn_width(self, layer_id: int) -> int:
        """Hidden size of layer ``layer_id``'s dense MLP (for a layer that is not MoE)."""
        return self.inter_dim if layer_id < self.n_dense_layers else self.dense_ffn_dim

    # ---------------------------------------------------------------- validate
    def validate(self) -> None:
        """Every field's type and range (NaN and inf refused, booleans must be booleans), then the
        relations between fields. Runs on construction, so no ModelConfig holds a bad value."""
        check = Fields(self, ConfigError)
        for name in ["max_batch_size", "max_seq_len", "vocab_size", "dim", "inter_dim", "moe_inter_dim",
                     "n_layers", "n_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                     "v_head_dim", "original_seq_len", "n_expert_groups", "n_limited_groups"]:
            check.integer(name, minimum=1)
        for name in ["q_lora_rank", "n_dense_layers", "n_routed_experts", "n_shared_experts",
                     "n_activated_experts", "n_mtp_layers", "n_kv_heads", "dense_ffn_dim"]:
            check.integer(name, minimum=0)
        for name in ["rope_theta", "rope_factor", "mscale", "norm_eps", "init_std", "route_scale",
                     "beta_fast", "beta_slow"]:
            check.number(name, above=0)
        for name in ["bias_update_speed", "balance_loss_alpha", "mtp_loss_weight", "expert_balance_loss_alpha"]:
            check.number(name, minimum=0)
        for name in ["gate_bias", "tie_word_embeddings"]:
            check.boolean(name)
        if self.qk_rope_head_dim % 2:
            raise ConfigError(f"ModelConfig.qk_rope_head_dim must be even (RoPE rotates pairs), got {self.qk_rope_head_dim}")
        check.choice("score_func", ("softmax", "sigmoid"))
        check.choice("dtype", ("bf16", "fp8"))
        check.choice("scale_fmt", (None, "ue8m0"))
        check.choice("attention", ("mla", "mha", "gqa", "mqa"))
        self._validate_baselines()
        if self.n_dense_layers > self.n_layers:
            raise ConfigError(f"ModelConfig.n_dense_layers ({self.n_dense_layers}) exceeds n_layers ({self.n_layers})")
        if self.beta_fast <= self.beta_slow:
            raise ConfigError(f"ModelConfig.beta_fast ({self.beta_fast}) must exceed beta_slow ({self.beta_slow})")
        if self.dense_ffn_dim == 0 and (self.n_dense_layers < self.n_layers or self.n_mtp_layers > 0):  # some layer is MoE
            self._validate_routing()
        if self.index_n_heads:
            self._validate_indexer()

    def _validate_baselines(self) -> None:
        if self.attention == "gqa":
            if not 1 <= self.n_kv_heads <= self.n_heads or self.n_heads % self.n_kv_heads:
                raise ConfigError(f"ModelConfig.n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads}) "
                                  "for attention='gqa' (each key/value head serves n_heads / n_kv_heads query heads)")
        elif self.n_kv_heads not in (0, self.kv_heads):
            raise ConfigError(f"ModelConfig.n_kv_heads ({self.n_kv_heads}) is only for attention='gqa'; "
                              f"attention={self.attention!r} has {self.kv_heads} key/value heads")
        if self.attention != "mla" and (self.index_n_heads or self.dtype == "fp8"):
            raise ConfigError(f"ModelConfig.attention={self.attention!r}: the sparse-attention indexer and the FP8 "
                              "checkpoint layout exist for MLA only")

    def _validate_indexer(self) -> None:
        check = Fields(self, ConfigError)
        for name in ["index_n_heads", "index_head_dim", "index_topk"]:
            check.integer(name, minimum=1)
        if self.q_lora_rank == 0:
            raise ConfigError("ModelConfig.index_n_heads: the indexer's queries come from MLA's query latent, "
                              "so a model with an indexer needs q_lora_rank > 0")
        if self.index_head_dim < self.qk_rope_head_dim:
            raise ConfigError(f"ModelConfig.index_head_dim ({self.index_head_dim}) must hold the rotated slice of "
                              f"qk_rope_head_dim ({self.qk_rope_head_dim}) dims")

    def _validate_routing(self) -> None:
        if self.n_routed_experts == 0:
            raise ConfigError("ModelConfig.n_routed_experts must be positive when some layers are MoE "
                              f"(n_layers={self.n_layers}, n_dense_layers={self.n_dense_layers})")
        if not 1 <= self.n_activated_experts <= self.n_routed_experts:
            raise ConfigError(f"ModelConfig.n_activated_experts ({self.n_activated_experts}) must be between 1 "
                              f"and n_routed_experts ({self.n_routed_experts})")
        if self.n_routed_experts % self.n_expert_groups:
            raise ConfigError(f"ModelConfig.n_routed_experts ({self.n_routed_experts}) is not divisible by "
                              f"n_expert_groups ({self.n_expert_groups})")
        if self.n_limited_groups > self.n_expert_groups:
            raise ConfigError(f"ModelConfig.n_limited_groups ({self.n_limited_groups}) exceeds "
                              f"n_expert_groups ({self.n_expert_groups})")
        reachable = self.n_limited_groups * self.experts_per_group
        if self.n_activated_experts > reachable:
            raise ConfigError(f"ModelConfig.n_activated_experts ({self.n_activated_experts}) is more than the "
                              f"{self.n_limited_groups} kept groups hold ({reachable} experts = "
                              f"n_limited_groups x n_routed_experts / n_expert_groups)")
        if self.gate_bias and self.n_expert_groups > 1 and self.experts_per_group < 2:
            raise ConfigError("ModelConfig.n_expert_groups: with gate_bias a group is scored by its two best "
                              f"experts, so each group needs at least 2 experts (has {self.experts_per_group})")

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """One of ``PRESETS`` (``v3-671b``, ``r1-671b``, ``v2-lite-16b``, ``v2-236b``, ``tiny``, ``mini``)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    # --------------------------------------------------------------------- JSON
    @classmethod
    def from_json(cls, path: str | Path) -> "ModelConfig":
        """Read an official inference JSON or a Hugging Face hub ``config.json``."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        data = read_json(path, max_bytes=2**20, error=ConfigError)  # a regular UTF-8 file of at most 1 MB
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object, found {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Official-form or hub-form dict. The hub form is recognised by ``hidden_size``/``model_type``."""
        if "hidden_size" in data or "model_type" in data:
            return cls._from_hf_dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; an official config may only use ModelArgs "
                              f"fields ({sorted(known)})")
        values = dict(data)
        if any(key.startswith("index_") for key in values):  # a V3.2 JSON: the official defaults for the rest
            for key, default in _OFFICIAL_INDEX_DEFAULTS.items():
                values.setdefault(key, default)
        # The official code creates the gate bias only when dim == 7168 (the V3 width). We keep the bias
        # whenever the scores are sigmoid (V3's aux-loss-free balancing) unless the JSON says otherwise.
        values.setdefault("gate_bias", values.get("score_func", cls.score_func) == "sigmoid")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The official form, including the training fields this library adds."""
        return dataclasses.asdict(self)

    @classmethod
    def _from_hf_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        model_type = data.get("model_type")
        if model_type not in ("deepseek_v3", "deepseek_v2", "deepseek_v32"):
            raise ConfigError(f"model_type must be 'deepseek_v3', 'deepseek_v32' or 'deepseek_v2', found "
                              f"{model_type!r}: this is not a DeepSeek-V2/V3 config")
        unknown = sorted(set(data) - _HF_KEYS - _HF_IGNORED_KEYS)
        if unknown:
            raise ConfigError(f"unknown keys in a {model_type} config.json: {unknown}")

        def d(key: str, default: Any = None) -> Any:
            """The value of ``key``; a missing key or JSON null means the default (hub configs write null
            for an unused feature, e.g. q_lora_rank in V2-Lite). Values are passed on as they are, so that
            ModelConfig.validate sees "128" or "false" and refuses them instead of a silent conversion."""
            value = data.get(key)
            return default if value is None else value

        def flag(key: str, default: bool) -> bool:
            value = d(key, default)
            if not isinstance(value, bool):
                raise ConfigError(f"{key} must be true or false (a JSON boolean), got {value!r}")
            return value

        if d("hidden_act", "silu") != "silu":
            raise ConfigError(f"hidden_act must be 'silu', found {d('hidden_act')!r}")
        if d("num_key_value_heads") not in (None, d("num_attention_heads")):
            raise ConfigError("num_key_value_heads must equal num_attention_heads (MLA has no KV head groups), "
                              f"found {d('num_key_value_heads')} vs {d('num_attention_heads')}")
        if flag("attention_bias", False):
            raise ConfigError("attention_bias=true is not a DeepSeek-V3 layout (its projections have no bias)")
        if d("moe_layer_freq", 1) != 1:
            raise ConfigError(f"moe_layer_freq={d('moe_layer_freq')} is not supported: V2/V3 use an MoE in every "
                              "layer after first_k_dense_replace")
        if not flag("rope_interleave", True):
            raise ConfigError("rope_interleave=false stores the RoPE dims half-split; the released weights "
                              "(and this library) use interleaved pairs")
        # transformers' own DeepseekV3Config writes no scoring_func: its V3 router is always sigmoid.
        v3 = model_type in ("deepseek_v3", "deepseek_v32")
        score_func = d("scoring_func", "sigmoid" if v3 else "softmax")
        topk_method = d("topk_method", "noaux_tc" if v3 else "greedy")
        if topk_method not in ("noaux_tc", "greedy", "group_limited_greedy"):
            raise ConfigError(f"topk_method must be 'noaux_tc', 'greedy' or 'group_limited_greedy', "
                              f"found {topk_method!r}")
        norm_topk_prob = flag("norm_topk_prob", score_func == "sigmoid")
        if norm_topk_prob != (score_func == "sigmoid"):
            raise ConfigError(f"norm_topk_prob={norm_topk_prob} with scoring_func={score_func!r}: DeepSeek "
                              "renormalises the top-k weights exactly when the scores are sigmoid")
        values: dict[str, Any] = {ours: d(key, default) for key, (ours, default) in _HF_FIELDS.items()}
        values.update(score_func=score_func, gate_bias=topk_method == "noaux_tc",
                      tie_word_embeddings=flag("tie_word_embeddings", False))
        if model_type == "deepseek_v32":
            values.update(_hf_indexer(data, values))
        if "num_nextn_predict_layers" not in data:
            values["n_mtp_layers"] = d("num_mtp_layers", 0)
        missing = sorted(k for k, v in values.items() if v is None)
        if missing:
            raise ConfigError(f"config.json lacks the fields behind {missing}")
        values.update(_hf_rope(data, values["max_seq_len"]))
        quant = d("quantization_config")
        if quant:
            if not isinstance(quant, dict) or quant.get("quant_method") != "fp8" or \
                    quant.get("weight_block_size") != [128, 128]:
                raise ConfigError(f"quantization_config {quant} is not DeepSeek's FP8 with 128x128 blocks")
            values["dtype"] = "fp8"
            values["scale_fmt"] = quant.get("scale_fmt")
        try:
            return cls(**values)
        except ConfigError as error:  # name the hub key the user wrote, not only our field
            field = re.match(r"ModelConfig\.(\w+)", str(error))
            key = next((k for k, (ours, _) in {**_HF_FIELDS, **_HF_ROPE_FIELDS}.items()
                        if field and ours == field.group(1)), None)
            if key is None:
                raise
            raise ConfigError(f"{error} (from the key {key})") from None

    def to_hf_dict(self) -> dict[str, Any]:
        """The hub ``config.json`` form (as ``deepseek-ai/DeepSeek-V3`` publishes it)."""
        if not self.is_v3_architecture:
            raise ConfigError(f"ModelConfig.attention={self.attention!r}, dense_ffn_dim={self.dense_ffn_dim}: an "
                              "ablation baseline has no hub config.json (it is not a DeepSeek-V3 layout)")
        out: dict[str, Any] = {
            "architectures": ["DeepseekV32ForCausalLM" if self.has_indexer else "DeepseekV3ForCausalLM"],
            "model_type": "deepseek_v3",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "intermediate_size": self.inter_dim,
            "moe_intermediate_size": self.moe_inter_dim,
            "num_hidden_layers": self.n_layers,
            "first_k_dense_replace": self.n_dense_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_heads,
            "n_routed_experts": self.n_routed_experts,
            "n_shared_experts": self.n_shared_experts,
            "num_experts_per_tok": self.n_activated_experts,
            "n_group": self.n_expert_groups,
            "topk_group": self.n_limited_groups,
            "scoring_func": self.score_func,
            "topk_method": "noaux_tc" if self.gate_bias else "greedy",
            "norm_topk_prob": self.score_func == "sigmoid",
            "routed_scaling_factor": self.route_scale,
            "q_lora_rank": self.q_lora_rank or None,
            "kv_lora_rank": self.kv_lora_rank,
            "qk_nope_head_dim": self.qk_nope_head_dim,
            "qk_rope_head_dim": self.qk_rope_head_dim,
            "v_head_dim": self.v_head_dim,
            "max_position_embeddings": self.max_seq_len,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.norm_eps,
            "initializer_range": self.init_std,
            "num_nextn_predict_layers": self.n_mtp_layers,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "attention_bias": False,
            "rope_interleave": True,
            "moe_layer_freq": 1,
        }
        if self.has_indexer:  # DeepSeek-V3.2 (transformers' DeepseekV32Config has no rope_interleave key)
            out.update(model_type="deepseek_v32", index_n_heads=self.index_n_heads,
                       index_head_dim=self.index_head_dim, index_topk=self.index_topk)
            del out["rope_interleave"]
        if self.uses_yarn:
            out["rope_scaling"] = {
                "type": "yarn", "factor": self.rope_factor,
                "original_max_position_embeddings": self.original_seq_len,
                "beta_fast": self.beta_fast, "beta_slow": self.beta_slow,
                "mscale": self.mscale, "mscale_all_dim": self.mscale,
            }
        if self.dtype == "fp8":
            out["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                          "weight_block_size": [128, 128]}
            if self.scale_fmt:
                out["quantization_config"]["scale_fmt"] = self.scale_fmt
        return out


def _hf_rope(data: dict[str, Any], max_position_embeddings: int) -> dict[str, Any]:
    """RoPE fields from ``rope_scaling`` (transformers 4.x, the hub) or ``rope_parameters`` (5.x)."""
    rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise ConfigError(f"rope_scaling must be a JSON object, got {rope!r}")
    theta = rope.get("rope_theta", data.get("rope_theta", 10000.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind in ("default", None):
        # No scaling: the model was trained on all its positions, so YaRN stays off.
        return dict(rope_theta=theta, original_seq_len=max_position_embeddings, rope_factor=1.0)
    if kind != "yarn":
        raise ConfigError(f"rope scaling type {kind!r} is not supported (DeepSeek-V2/V3 use 'yarn')")
    if "factor" not in rope:
        raise ConfigError("rope_scaling of type 'yarn' lacks its 'factor'")
    mscale = rope.get("mscale", 1.0)
    mscale_all_dim = rope.get("mscale_all_dim", 0.0)
    for key, value in (("mscale", mscale), ("mscale_all_dim", mscale_all_dim)):
        if not is_number(value):
            raise ConfigError(f"rope_scaling.{key} must be a finite number, got {value!r}")
    if mscale_all_dim and not math.isclose(mscale, mscale_all_dim):
        raise ConfigError(f"rope mscale ({mscale}) differs from mscale_all_dim ({mscale_all_dim}); every released "
                          "DeepSeek-V2/V3 config sets them equal, and only that case is supported")
    return dict(
        rope_theta=theta, rope_factor=rope["factor"],
        original_seq_len=rope.get("original_max_position_embeddings", 4096),
        beta_fast=rope.get("beta_fast", 32), beta_slow=rope.get("beta_slow", 1),
        mscale=mscale_all_dim or mscale,
    )


# hub key -> (ModelConfig field, default when the key is missing or null)
_HF_FIELDS: dict[str, tuple[str, Any]] = {
    "vocab_size": ("vocab_size", None), "hidden_size": ("dim", None), "intermediate_size": ("inter_dim", None),
    "moe_intermediate_size": ("moe_inter_dim", None), "num_hidden_layers": ("n_layers", None),
    "first_k_dense_replace": ("n_dense_layers", 0), "num_attention_heads": ("n_heads", None),
    "n_routed_experts": ("n_routed_experts", 0), "n_shared_experts": ("n_shared_experts", 0),
    "num_experts_per_tok": ("n_activated_experts", 0), "n_group": ("n_expert_groups", 1),
    "topk_group": ("n_limited_groups", 1), "routed_scaling_factor": ("route_scale", 1.0),
    "q_lora_rank": ("q_lora_rank", 0), "kv_lora_rank": ("kv_lora_rank", None),
    "qk_nope_head_dim": ("qk_nope_head_dim", None), "qk_rope_head_dim": ("qk_rope_head_dim", None),
    "v_head_dim": ("v_head_dim", None), "max_position_embeddings": ("max_seq_len", None),
    "num_nextn_predict_layers": ("n_mtp_layers", 0), "rms_norm_eps": ("norm_eps", 1e-6),
    "initializer_range": ("init_std", 0.006),
}
# rope_scaling key -> (ModelConfig field, default), for naming the key in an error
_HF_ROPE_FIELDS: dict[str, tuple[str, Any]] = {
    "rope_theta": ("rope_theta", 10000.0), "rope_scaling.factor": ("rope_factor", None),
    "rope_scaling.original_max_position_embeddings": ("original_seq_len", 4096),
    "rope_scaling.beta_fast": ("beta_fast", 32), "rope_scaling.beta_slow": ("beta_slow", 1),
    "rope_scaling.mscale": ("mscale", 1.0),
}


_HF_KEYS = {
    "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
    "first_k_dense_replace", "num_attention_heads", "num_key_value_heads", "n_routed_experts",
    "n_shared_experts", "num_experts_per_tok", "n_group", "topk_group", "scoring_func", "topk_method",
    "norm_topk_prob", "routed_scaling_factor", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
    "qk_rope_head_dim", "v_head_dim", "max_position_embeddings", "rope_theta", "rope_scaling",
    "rope_parameters", "rms_norm_eps", "initializer_range", "num_nextn_predict_layers", "num_mtp_layers",
    "tie_word_embeddings", "hidden_act", "attention_bias", "rope_interleave", "moe_layer_freq",
    "quantization_config", "model_type",
    "index_n_heads", "index_head_dim", "index_topk", "mlp_layer_types", "layer_types", "mlp_bias",
}
# The official ModelArgs defaults of the indexer fields (inference/model.py of DeepSeek-V3.2).
_OFFICIAL_INDEX_DEFAULTS = {"index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048}


def _hf_indexer(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The indexer fields of a ``deepseek_v32`` config.json (missing keys: transformers' defaults, the 671B ones),
    after checking the per-layer lists transformers 5.x writes against the fields they repeat."""
    n_layers, n_dense = values["n_layers"], values["n_dense_layers"]
    mlp_types = data.get("mlp_layer_types")
    if mlp_types is not None and (not isinstance(mlp_types, list) or
                                  mlp_types != ["dense"] * min(n_dense, n_layers) + ["sparse"] * max(n_layers - n_dense, 0)):
        raise ConfigError(f"mlp_layer_types {mlp_types!r} is not first_k_dense_replace={n_dense} dense layers "
                          "followed by MoE ('sparse') layers")
    layer_types = data.get("layer_types")
    if layer_types is not None and (not isinstance(layer_types, list) or set(layer_types) != {"indexed_attention"}):
        raise ConfigError(f"layer_types {layer_types!r}: every DeepSeek-V3.2 layer is 'indexed_attention'")
    if data.get("mlp_bias"):
        raise ConfigError("mlp_bias=true is not a DeepSeek layout (its projections have no bias)")
    return {key: data[key] if data.get(key) is not None else default
            for key, default in _OFFICIAL_INDEX_DEFAULTS.items()}
# Hub keys that describe packaging, tokens or runtime switches rather than the architecture.
_HF_IGNORED_KEYS = {
    "architectures", "auto_map", "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id",
    "ep_size", "pretraining_tp", "torch_dtype", "dtype", "transformers_version", "use_cache",
    "aux_loss_alpha", "seq_aux", "output_router_logits", "head_dim", "qk_head_dim", "_name_or_path",
    "output_attentions", "output_hidden_states", "return_dict", "id2label", "label2id",
    "chunk_size_feed_forward", "is_encoder_decoder", "problem_type", "tokenizer_class", "num_labels",
}


# --------------------------------------------------------------------------- presets
_V3 = ModelConfig(
    max_seq_len=16384, dtype="fp8", vocab_size=129280, dim=7168, inter_dim=18432, moe_inter_dim=2048,
    n_layers=61, n_dense_layers=3, n_heads=128, n_routed_experts=256, n_shared_experts=1,
    n_activated_experts=8, n_expert_groups=8, n_limited_groups=4, score_func="sigmoid", route_scale=2.5,
    q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
    gate_bias=True, n_mtp_layers=1,
)

PRESETS: dict[str, ModelConfig] = {
    # The 671B model (inference/configs/config_671B.json + the hub's one MTP layer). R1 has the same shapes.
    "v3-671b": _V3,
    "r1-671b": _V3,
    # DeepSeek-V3.2 (inference/config_671B_v3.2.json): V3 plus a lightning indexer in every layer, UE8M0 scales.
    "v3.2-671b": dataclasses.replace(_V3, scale_fmt="ue8m0", index_n_heads=64, index_head_dim=128, index_topk=2048),
    # inference/configs/config_16B.json (DeepSeek-V2-Lite): plain wq, softmax router, 2 shared experts.
    "v2-lite-16b": ModelConfig(mscale=0.707),
    # inference/configs/config_236B.json (DeepSeek-V2).
    "v2-236b": ModelConfig(
        vocab_size=102400, dim=5120, inter_dim=12288, moe_inter_dim=1536, n_layers=60, n_dense_layers=1,
        n_heads=128, n_routed_experts=160, n_shared_experts=2, n_activated_experts=6, n_expert_groups=8,
        n_limited_groups=3, route_scale=16.0, q_lora_rank=1536,
    ),
    # For tests and CPU training: every V3 feature, a training step well under a second on 2 cores.
    "tiny": ModelConfig(
        max_seq_len=512, original_seq_len=128, rope_factor=4.0, vocab_size=2048, dim=128, inter_dim=384,
        moe_inter_dim=64, n_layers=4, n_dense_layers=1, n_heads=4, n_routed_experts=16, n_shared_experts=1,
        n_activated_experts=4, n_expert_groups=4, n_limited_groups=2, score_func="sigmoid", route_scale=2.5,
        q_lora_rank=64, kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
        gate_bias=True, n_mtp_layers=1, init_std=0.02,
    ),
    # For one GPU: ~100M activated of ~600M parameters, the V3 shape ratios at a twelfth of the width.
    "mini": ModelConfig(
        max_seq_len=4096, original_seq_len=1024, rope_factor=4.0, vocab_size=16384, dim=768, inter_dim=2048,
        moe_inter_dim=256, n_layers=12, n_dense_layers=1, n_heads=12, n_routed_experts=64, n_shared_experts=1,
        n_activated_experts=6, n_expert_groups=8, n_limited_groups=4, score_func="sigmoid", route_scale=2.5,
        q_lora_rank=384, kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
        gate_bias=True, n_mtp_layers=1, init_std=0.02,
    ),
}

# DeepSeek-V3.2 in miniature: tiny / mini with an indexer whose top-k is a fraction of the training length
# (tiny trains on 128-token windows: 32 keys per query; mini on 512-4096 tokens: 256).
PRESETS["tiny-dsa"] = dataclasses.replace(PRESETS["tiny"], index_n_heads=4, index_head_dim=32, index_topk=32)
PRESETS["mini-dsa"] = dataclasses.replace(PRESETS["mini"], index_n_heads=8, index_head_dim=64, index_topk=256)
