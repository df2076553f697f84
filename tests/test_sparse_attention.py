"""DeepSeek-V3.2 (DSA): the config, exact counts, parity with transformers' DeepseekV32, checkpoints, generation.

References: transformers' ``DeepseekV32ForCausalLM`` on random checkpoints in the hub format (and the FP8
and official forms written here from the format description, independently of ``minideepseek``), naive
loops for the indexer's scores and the top-k, closed-form parameter counts. Every parity sequence is
longer than ``index_topk``, and a test shows that the sparse selection changes the logits.
"""

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from minideepseek import ModelConfig, Transformer, count_parameters, generate, load_pretrained, save_pretrained
from minideepseek.checkpoint import verify_checkpoint
from minideepseek.checkpoint_names import hub_layout, official_layout
from minideepseek.indexer import apply_rotary_emb_half, fp8_index_scores, hadamard_matrix, index_scores, topk_mask
from minideepseek.kv_cache import absorbed_attention
from minideepseek.sparse_attention import attention_flops, crossover, sparse_absorbed_attention

transformers = pytest.importorskip("transformers")
from transformers import DeepseekV32Config, DeepseekV32ForCausalLM  # noqa: E402

# The same block-by-block FP8 quantiser, written from the format description, as for V3's parity tests.
from tests.test_checkpoint_transformers import (CONVERT_PY, convert_py, naive_dequantize,  # noqa: E402
                                                naive_quantize, hf_values as v3_hf_values)

TOLERANCE = 1e-4
SEQ = 48  # > index_topk = 16: the selection drops keys from position 16 on


# ------------------------------------------------------------------------------------------ counts
def test_v32_671b_counts_are_exact():
    """V3's 671,026,419,200 plus 61 indexers of 13,959,424 (closed form below); the MTP layer has one too."""
    count = count_parameters(ModelConfig.from_preset("v3.2-671b"))
    indexer = 1536 * 64 * 128 + 7168 * 128 + 2 * 128 + 7168 * 64  # wq_b, wk, k_norm (weight, bias), weights_proj
    assert indexer == count.indexer == 13_959_424
    assert count.total == 671_877_944_064 == 671_026_419_200 + 61 * indexer
    assert count.indexers == 851_524_864
    assert count.mtp == count_parameters(ModelConfig.from_preset("v3-671b")).mtp + indexer
    assert count.activated == 37_552_297_472 + 61 * indexer


@pytest.mark.parametrize("preset", ["tiny-dsa", "mini-dsa", "v3.2-671b"])
def test_counts_match_a_model_built_on_meta(preset):
    from minideepseek.checkpoint import _SkipInitOnMeta  # meta tensors need no initialisation (seconds, not a minute)

    config = ModelConfig.from_preset(preset)
    with torch.device("meta"), _SkipInitOnMeta():
        model = Transformer(config)
    main = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("mtp."))
    mtp = sum(p.numel() for n, p in model.named_parameters() if n.startswith("mtp."))
    count = count_parameters(config)
    assert (count.total, count.mtp) == (main, mtp)


def test_small_presets_select_at_their_training_lengths():
    for name, length in (("tiny-dsa", 128), ("mini-dsa", 1024)):
        config = ModelConfig.from_preset(name)
        assert config.has_indexer and config.index_topk <= length // 4


# ------------------------------------------------------------------------------------------ config
def test_official_v32_json_and_hub_json_read_to_the_preset(tmp_path):
    official = {  # inference/config_671B_v3.2.json
        "vocab_size": 129280, "dim": 7168, "inter_dim": 18432, "moe_inter_dim": 2048, "n_layers": 61,
        "n_dense_layers": 3, "n_heads": 128, "n_routed_experts": 256, "n_shared_experts": 1,
        "n_activated_experts": 8, "n_expert_groups": 8, "n_limited_groups": 4, "route_scale": 2.5,
        "score_func": "sigmoid", "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64, "v_head_dim": 128, "dtype": "fp8", "scale_fmt": "ue8m0",
        "index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048,
    }
    config = ModelConfig.from_dict(official)
    preset = ModelConfig.from_preset("v3.2-671b")
    assert (config.index_n_heads, config.index_head_dim, config.index_topk) == (64, 128, 2048)
    assert count_parameters(config).total == count_parameters(preset).total
    hub = preset.to_hf_dict()
    assert hub["model_type"] == "deepseek_v32" and hub["architectures"] == ["DeepseekV32ForCausalLM"]
    assert ModelConfig.from_dict(hub) == preset
    v3 = ModelConfig.from_preset("v3-671b").to_hf_dict()
    assert v3["model_type"] == "deepseek_v3" and "index_topk" not in v3


def test_transformers_config_reads_and_bad_indexer_configs_are_refused():
    theirs = DeepseekV32Config(**hf_values()).to_dict()
    config = ModelConfig.from_dict(theirs)
    assert (config.index_n_heads, config.index_head_dim, config.index_topk, config.n_dense_layers) == (8, 16, 16, 1)
    with pytest.raises(Exception, match="mlp_layer_types"):
        ModelConfig.from_dict({**theirs, "mlp_layer_types": ["sparse", "sparse", "sparse"]})
    with pytest.raises(Exception, match="q_lora_rank"):
        ModelConfig.from_preset("tiny-dsa", q_lora_rank=0)
    with pytest.raises(Exception, match="index_head_dim"):
        ModelConfig.from_preset("tiny-dsa", index_head_dim=8)


# ------------------------------------------------------------------------------------------ parity
def hf_values(**overrides) -> dict:
    """test_checkpoint_transformers' small config with an indexer: 8 heads of 16, top-16."""
    return v3_hf_values(**{"index_n_heads": 8, "index_head_dim": 16, "index_topk": 16, **overrides})


def random_hf_model(seed: int = 0, **overrides) -> DeepseekV32ForCausalLM:
    torch.manual_seed(seed)
    model = DeepseekV32ForCausalLM(DeepseekV32Config(**hf_values(**overrides))).eval()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.copy_(torch.randn_like(buffer) * 0.3)
        for name, param in model.named_parameters():
            if "k_norm" in name:  # a LayerNorm with a non-trivial gain and bias
                param.copy_(torch.randn_like(param) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    return model


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 320, (2, SEQ), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def hf_model():
    return random_hf_model()


@pytest.fixture(scope="module")
def hf_logits(hf_model, tokens):
    with torch.no_grad():
        return hf_model(tokens).logits


@pytest.fixture(scope="module")
def hub_dir(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("v32_hub")
    hf_model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ours(hub_dir):
    return load_pretrained(hub_dir, progress=False)


def logits_of(model, tokens):
    with torch.no_grad():
        out = model(tokens)
    return out.logits if hasattr(out, "logits") else out


def max_error(a, b) -> float:
    error = (a - b).abs().max().item()
    print(f"max abs logit error {error:.3g} (logits up to {b.abs().max().item():.3g})")
    return error


def test_hub_checkpoint_matches_transformers(ours, hf_logits, tokens):
    assert ours.config.has_indexer and ours.config.index_topk < SEQ
    assert hf_logits.abs().max() > 3 and hf_logits.std() > 0.5
    assert max_error(logits_of(ours, tokens), hf_logits) < TOLERANCE


def test_sparse_selection_changes_the_logits(ours, hf_logits, tokens):
    """Attending to every causal key instead of the top 16 moves the logits far beyond the tolerance."""
    for module in ours.modules():
        if hasattr(module, "index_topk"):
            module.mode = "dense"
    try:
        assert max_error(logits_of(ours, tokens), hf_logits) > 0.1
    finally:
        for module in ours.modules():
            if hasattr(module, "index_topk"):
                module.mode = "sparse"


def test_interleaved_indexer_rope_fails_parity(ours, hf_logits, tokens):
    """The porting trap: rotating the indexer's interleaved pairs (MLA's layout, and the official code's before
    its November 2025 fix) selects other keys, and the logits leave the tolerance."""
    indexers = [m for m in ours.modules() if hasattr(m, "rope_layout")]
    for indexer in indexers:
        indexer.rope_layout = "interleaved"
    try:
        assert max_error(logits_of(ours, tokens), hf_logits) > 0.1
    finally:
        for indexer in indexers:
            indexer.rope_layout = "half"


def test_sdpa_backend_gives_the_same_logits(ours, hf_logits, tokens):
    from minideepseek import configure_speed
    configure_speed(ours, "sdpa", "loop")
    try:
        assert max_error(logits_of(ours, tokens), hf_logits) < TOLERANCE
    finally:
        configure_speed(ours, "eager", "loop")


def test_verify_and_hub_names(hub_dir, ours):
    report = verify_checkpoint(hub_dir)
    assert not report.missing and not report.unexpected and not report.wrong_shape
    names = hub_layout(ours.config, fp8=True)
    for part in ("wq_b.weight", "wq_b.weight_scale_inv", "wk.weight", "wk.weight_scale_inv", "weights_proj.weight",
                 "k_norm.weight", "k_norm.bias"):
        assert f"model.layers.2.self_attn.indexer.{part}" in names
    assert "model.layers.2.self_attn.indexer.weights_proj.weight_scale_inv" not in names



QUANTISED = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj",
             "down_proj", "wq_b", "wk")  # the indexer's wq_b and wk are FP8; weights_proj and k_norm are not


def test_fp8_hub_checkpoint_with_fp8_indexer(tmp_path, tokens):
    """Every projection (the indexer's wq_b and wk included) FP8 + weight_scale_inv, k_norm float32;
    reference: transformers on the weights dequantised block by block here."""
    hf_model = random_hf_model(seed=2, hidden_size=160, intermediate_size=200)
    hf_model.save_pretrained(tmp_path / "float")
    with safe_open(tmp_path / "float" / "model.safetensors", framework="pt") as f:
        state = {name: f.get_tensor(name) for name in f.keys()}
    fp8_state, dequantised = {}, {}
    for name, tensor in state.items():
        if name.split(".")[-2] in QUANTISED and name.endswith("weight"):
            q, scale_inv = naive_quantize(tensor)
            fp8_state[name], fp8_state[name + "_scale_inv"] = q, scale_inv
            dequantised[name] = naive_dequantize(q, scale_inv)
        else:
            fp8_state[name] = dequantised[name] = tensor
    assert "model.layers.1.self_attn.indexer.wk.weight_scale_inv" in fp8_state
    assert fp8_state["model.layers.1.self_attn.indexer.k_norm.bias"].dtype == torch.float32
    published = json.loads((tmp_path / "float" / "config.json").read_text())
    quant = {"quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                     "weight_block_size": [128, 128]}}
    for directory, tensors, extra in (("fp8", fp8_state, quant), ("dequantised", dequantised, {})):
        (tmp_path / directory).mkdir()
        save_file(tensors, tmp_path / directory / "model.safetensors", metadata={"format": "pt"})
        (tmp_path / directory / "config.json").write_text(json.dumps({**published, **extra}))
    reference = DeepseekV32ForCausalLM.from_pretrained(tmp_path / "dequantised").eval()
    ours = load_pretrained(tmp_path / "fp8", progress=False)
    assert ours.config.dtype == "fp8"
    assert ours.layers[1].attn.indexer.k_norm.weight.dtype == torch.float32
    assert max_error(logits_of(ours, tokens), logits_of(reference, tokens)) < TOLERANCE


# inference/convert.py of DeepSeek-V3.2: V3's table plus the indexer, whose tensors every rank holds whole.
CONVERT_PY_V32 = {**CONVERT_PY, "wq_b": ("wq_b", None), "wk": ("wk", None), "k_norm": ("k_norm", None),
                  "weights_proj": ("weights_proj", None)}


def test_official_files_with_the_indexer_repeated_in_every_rank(hub_dir, hf_logits, tokens, tmp_path):
    with safe_open(hub_dir / "model.safetensors", framework="pt") as f:
        state = {name: f.get_tensor(name) for name in f.keys()}
    mp = 2
    ranks = convert_py(state, n_experts=16, mp=mp, table=CONVERT_PY_V32)
    for rank, tensors in enumerate(ranks):
        save_file(tensors, tmp_path / f"model{rank}-mp{mp}.safetensors")
    assert ranks[1]["layers.0.attn.indexer.wq_b.weight"].shape == (8 * 16, 24)  # whole, not cut
    config = ModelConfig.from_dict(json.loads((hub_dir / "config.json").read_text()))
    official = {k: v for k, v in config.to_dict().items() if k in {
        "vocab_size", "dim", "inter_dim", "moe_inter_dim", "n_layers", "n_dense_layers", "n_heads",
        "n_routed_experts", "n_shared_experts", "n_activated_experts", "n_expert_groups", "n_limited_groups",
        "route_scale", "score_func", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
        "v_head_dim", "max_seq_len", "original_seq_len", "rope_factor", "beta_fast", "beta_slow", "mscale",
        "index_n_heads", "index_head_dim", "index_topk"}}
    (tmp_path / "config.json").write_text(json.dumps(official))
    layout = official_layout(config, mp, fp8=False)
    assert layout[0]["layers.0.attn.indexer.wq_b.weight"].split_dim is None
    loaded = load_pretrained(tmp_path, progress=False)
    assert max_error(logits_of(loaded, tokens), hf_logits) < TOLERANCE


def test_our_export_loads_in_transformers(tmp_path, tokens):
    config = ModelConfig.from_preset("tiny-dsa", vocab_size=320, n_layers=3, n_mtp_layers=0, init_std=0.2,
                                     index_topk=16)
    torch.manual_seed(3)
    model = Transformer(config).eval()
    save_pretrained(model, tmp_path / "hf", progress=False)
    theirs = DeepseekV32ForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert theirs.config.index_topk == 16
    assert max_error(logits_of(theirs, tokens), logits_of(model, tokens)) < TOLERANCE
    save_pretrained(model, tmp_path / "official", format="official", world_size=2, progress=False)
    assert json.loads((tmp_path / "official" / "config.json").read_text())["index_topk"] == 16
    back = load_pretrained(tmp_path / "official", progress=False)
    assert max_error(logits_of(back, tokens), logits_of(model, tokens)) < TOLERANCE


# ------------------------------------------------------------------------------------------ generation
@pytest.mark.parametrize("cache", ["absorbed", "naive"])
def test_generate_equals_the_full_forward(ours, cache):
    """Greedy cached decoding on a DSA model gives, token by token, the argmax of the full forward pass
    (prompts of different lengths, both longer than index_topk, so the cached selection matters)."""
    prompts = [torch.randint(0, 320, (30,), generator=torch.Generator().manual_seed(5)).tolist(),
               torch.randint(0, 320, (21,), generator=torch.Generator().manual_seed(6)).tolist()]
    outputs = generate(ours, prompts, max_new_tokens=8, temperature=0, cache=cache)
    for out, prompt in zip(outputs, prompts):
        with torch.no_grad():
            logits = ours(torch.tensor([out]))[0]
        expected = logits[len(prompt) - 1:-1].argmax(-1).tolist()
        assert out[len(prompt):] == expected


def test_cached_logits_equal_the_full_forward(ours):
    from minideepseek.kv_cache import KVCache, forward_step
    tokens = torch.randint(0, 320, (2, 40), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = ours(tokens)
        for kind in ("absorbed", "naive"):
            cache = KVCache(ours.config, kind, max_batch_size=2, max_seq_len=40)
            hidden = [forward_step(ours, cache, tokens[:, :25], torch.zeros(2, dtype=torch.long))]
            for t in range(25, 40):
                hidden.append(forward_step(ours, cache, tokens[:, t:t + 1], torch.full((2,), t)))
            logits = ours.head(ours.norm(torch.cat(hidden, dim=1)))
            assert max_error(logits, full) < TOLERANCE


# ------------------------------------------------------------------------------------------ pieces
def test_index_scores_and_topk_against_loops():
    torch.manual_seed(0)
    b, s, t, h, d, k = 2, 5, 7, 3, 8, 3
    q, key, w = torch.randn(b, s, h, d), torch.randn(b, t, d), torch.randn(b, s, h)
    scores = index_scores(q, key, w, d ** -0.5)
    for bi in range(b):
        for si in range(s):
            for ti in range(t):
                expected = sum(w[bi, si, j] * max(0.0, float(q[bi, si, j] @ key[bi, ti]) * d ** -0.5) for j in range(h))
                assert abs(scores[bi, si, ti] - expected) < 1e-5
    visible = torch.ones(s, t, dtype=torch.bool).tril(diagonal=t - s)
    mask = topk_mask(scores, visible, k)
    for bi in range(b):
        for si in range(s):
            allowed = [ti for ti in range(t) if visible[si, ti]]
            best = sorted(allowed, key=lambda ti: -float(scores[bi, si, ti]))[:k]
            assert sorted(best) == mask[bi, si].nonzero().flatten().tolist()


def test_half_split_rope_pairs_i_with_i_plus_half():
    x = torch.zeros(1, 1, 1, 8)
    x[..., 1] = 1.0  # dim 1 pairs with dim 5 (half-split), not with dim 0 (interleaved)
    angle = torch.tensor([0.0, 0.7, 0.0, 0.0])
    out = apply_rotary_emb_half(x, torch.polar(torch.ones(1, 4), angle.view(1, 4)))
    assert torch.allclose(out[0, 0, 0], torch.tensor([0, math.cos(0.7), 0, 0, 0, math.sin(0.7), 0, 0]), atol=1e-6)


def test_fp8_index_scores_simulate_the_official_kernel():
    """The Hadamard rotation is orthogonal; FP8 scores stay close to the exact ones and mostly keep the same top-k."""
    h = hadamard_matrix(128)
    assert torch.allclose(h @ h.T, torch.eye(128), atol=1e-5)
    torch.manual_seed(0)
    q, k, w = torch.randn(1, 64, 8, 128), torch.randn(1, 64, 128), torch.randn(1, 64, 8)
    q[..., 3] *= 30  # an outlier channel
    exact, fp8 = index_scores(q, k, w, 128 ** -0.5), fp8_index_scores(q, k, w, 128 ** -0.5)
    assert (fp8 - exact).abs().max() / exact.abs().max() < 0.05
    overlap = (exact.topk(16).indices.sort().values.unsqueeze(-1) == fp8.topk(16).indices.unsqueeze(-2)).any(-1)
    assert overlap.float().mean() > 0.8


def test_gathered_sparse_decode_equals_the_masked_one(ours):
    from minideepseek.kv_cache import project
    mla = ours.layers[1].attn
    torch.manual_seed(0)
    x = torch.randn(2, 30, ours.config.dim)
    freqs = ours.freqs_cis(30, x.device).unsqueeze(0).expand(2, -1, -1)
    with torch.no_grad():
        q_nope, q_pe, latent, k_pe = project(mla, x, freqs)
        scores = torch.randn(2, 30, 30)
        visible = torch.ones(30, 30, dtype=torch.bool).tril()
        mask = topk_mask(scores, visible, 16)
        indices = scores.masked_fill(~visible, float("-inf")).topk(16, dim=-1).indices
        valid = visible.expand(2, -1, -1).gather(-1, indices)
        masked = absorbed_attention(q_nope, q_pe, latent, k_pe, mla, mask)
        gathered = sparse_absorbed_attention(q_nope, q_pe, latent, k_pe, mla, indices, valid)
    assert max_error(gathered, masked) < 1e-5


def test_cost_model_at_v32_size():
    config = ModelConfig.from_preset("v3.2-671b")
    one = attention_flops(config, 1)
    assert float(one["dense MQA"]) == 2 * 128 * (2 * 512 + 64)
    assert float(one["indexer"]) == 2 * 64 * 129
    long = attention_flops(config, 131072)
    assert long["sparse (indexer + top-k MQA)"] < long["dense MQA"] / 5
    assert 2048 < crossover(config, "dense MQA") < 2300 < crossover(config, "dense MHA") < 10000
