"""generate(): greedy equals an uncached argmax loop, batching, EOS, seeds, streaming, speculative decoding."""

from types import SimpleNamespace

import pytest
import torch

from minideepseek import ModelConfig, Transformer, generate
from minideepseek.generation import GenerationStats, Sampler


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(ModelConfig.from_preset("tiny", n_layers=2)).eval()


def greedy_without_cache(model, prompt, steps):
    """The reference: the whole sequence through Transformer.forward for every new token."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens


PROMPTS = [[5, 17, 300], [9, 1000, 4, 77, 123, 2000, 8], [42]]


@pytest.mark.parametrize("cache", ["absorbed", "naive"])
def test_greedy_batch_equals_uncached_argmax_of_each_prompt(model, cache):
    out = generate(model, PROMPTS, 10, temperature=0, cache=cache)
    assert out == [greedy_without_cache(model, p, 10) for p in PROMPTS]


def test_greedy_past_the_yarn_original_length(model):
    prompt = torch.randint(0, 2048, (135,), generator=torch.Generator().manual_seed(5)).tolist()
    assert generate(model, prompt, 4, temperature=0) == greedy_without_cache(model, prompt, 4)


def test_same_seed_same_tokens_and_batch_rows_are_independent_of_each_other(model):
    kwargs = dict(temperature=0.8, top_k=50, top_p=0.9)
    first = generate(model, PROMPTS, 12, seed=7, **kwargs)
    assert generate(model, PROMPTS, 12, seed=7, **kwargs) == first
    assert generate(model, PROMPTS, 12, seed=8, **kwargs) != first
    assert [len(row) for row in first] == [len(p) + 12 for p in PROMPTS]


def test_eos_stops_its_row_only_and_tensor_rows_are_padded(model):
    plain = generate(model, PROMPTS[:2], 8, temperature=0)
    eos = plain[0][len(PROMPTS[0]) + 2]  # row 0's third new token
    assert eos not in plain[1][len(PROMPTS[1]):]
    streamed = {0: [], 1: []}
    out = generate(model, PROMPTS[:2], 8, temperature=0, eos_id=eos,
                   callback=lambda row, tokens: streamed[row].extend(tokens))
    first_eos = plain[0].index(eos, len(PROMPTS[0]))
    assert out == [plain[0][:first_eos + 1], plain[1]]
    assert [PROMPTS[0] + streamed[0], PROMPTS[1] + streamed[1]] == out
    same_length = torch.tensor([PROMPTS[0], PROMPTS[1][:3]])
    padded = generate(model, same_length, 8, temperature=0, eos_id=eos)
    assert padded.shape == (2, 11) and padded[0, first_eos + 1:].eq(eos).all()


def test_generate_restores_training_mode_and_leaves_the_moe_counters_alone(model):
    model.train()
    counters = [layer.ffn.tokens_per_expert.clone() for layer in model.layers[1:]]
    generate(model, [1, 2, 3], 3, temperature=0)
    assert model.training
    model.eval()
    assert all(torch.equal(c, layer.ffn.tokens_per_expert) for c, layer in zip(counters, model.layers[1:]))


def model_whose_mtp_guesses_the_bigram(output_scale):
    """A model whose MTP module predicts what the main model would predict from the next token alone.

    The MTP block is the identity and eh_proj keeps only the embedding half, so the MTP guess
    for position i+2 is head(norm(emb(t_{i+1}))). The main model's layer outputs are scaled by
    ``output_scale``: 0 makes the main model that same bigram (every draft accepted), larger
    values make it depend on the context (some drafts rejected).
    """
    torch.manual_seed(0)
    config = ModelConfig.from_preset("tiny", n_layers=2)
    m = Transformer(config).eval()
    with torch.no_grad():
        for name, p in m.layers.named_parameters():
            if name.endswith(("wo.weight", "w2.weight")):
                p.mul_(output_scale)
        mtp = m.mtp[0]
        mtp.eh_proj.weight.zero_()
        mtp.eh_proj.weight[:, :config.dim] = torch.eye(config.dim)
        for name, p in mtp.block.named_parameters():
            if name.endswith(("wo.weight", "w2.weight")):
                p.zero_()
    return m


@pytest.mark.parametrize("cache", ["absorbed", "naive"])
def test_speculative_greedy_equals_plain_greedy(cache):
    m = model_whose_mtp_guesses_the_bigram(0.4)
    stats = GenerationStats()
    speculative = generate(m, PROMPTS, 24, temperature=0, cache=cache, speculative=True, stats=stats)
    assert speculative == generate(m, PROMPTS, 24, temperature=0, cache=cache)
    assert 0.2 < stats.acceptance_rate < 0.9  # both the accept and the reject paths ran
    assert stats.forward_passes < 24


def test_speculative_rows_finishing_at_different_steps_stay_inside_the_cache():
    m = model_whose_mtp_guesses_the_bigram(0.4)
    prompts = torch.randint(0, 2048, (8, 5), generator=torch.Generator().manual_seed(6))
    assert torch.equal(generate(m, prompts, 20, temperature=0, speculative=True),
                       generate(m, prompts, 20, temperature=0))


def test_speculative_with_every_draft_right_needs_half_the_forward_passes():
    m = model_whose_mtp_guesses_the_bigram(0.0)
    stats = GenerationStats()
    out = generate(m, [PROMPTS[0]], 20, temperature=0, speculative=True, stats=stats)
    assert out == generate(m, [PROMPTS[0]], 20, temperature=0)
    assert stats.acceptance_rate == 1.0 and stats.forward_passes == 1 + 10  # prefill, then 2 tokens a pass


def test_speculative_sampling_is_deterministic_and_stops_at_eos():
    m = model_whose_mtp_guesses_the_bigram(0.4)
    first = generate(m, PROMPTS, 16, temperature=1.0, seed=3, speculative=True)
    assert generate(m, PROMPTS, 16, temperature=1.0, seed=3, speculative=True) == first
    eos = first[1][len(PROMPTS[1]) + 4]
    stopped = generate(m, PROMPTS, 16, temperature=1.0, seed=3, speculative=True, eos_id=eos)
    assert stopped[1] == first[1][:first[1].index(eos, len(PROMPTS[1])) + 1]


def test_speculative_sampling_leaves_the_main_distribution_unchanged():
    """The first token out of verify() is distributed as p, whatever the draft distribution q."""
    p_logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    q_logits = torch.tensor([0.0, 2.0, 1.0, 0.0, -3.0])
    n = 200_000
    sampler = Sampler(temperature=1.0, generator=torch.Generator().manual_seed(0))
    draft = sampler.draw(q_logits.softmax(-1).expand(n, -1))
    accepted, bonus = sampler.verify(draft, q_logits.expand(n, -1), p_logits.expand(n, -1),
                                     torch.zeros(n, 5))
    first = torch.where(accepted, draft, bonus)
    frequencies = torch.bincount(first, minlength=5) / n
    torch.testing.assert_close(frequencies, p_logits.softmax(-1), atol=5e-3, rtol=0)
    expected_acceptance = torch.minimum(p_logits.softmax(-1), q_logits.softmax(-1)).sum()
    assert abs(accepted.float().mean() - expected_acceptance) < 5e-3


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.05, 0.3, 0.15]]))
    torch.testing.assert_close(Sampler(top_k=2).probs(logits), torch.tensor([[0.625, 0, 0.375, 0]]))
    # top_p=0.8: 0.5 + 0.3 reaches 0.8, so 0.15 and 0.05 are dropped
    torch.testing.assert_close(Sampler(top_p=0.8).probs(logits), torch.tensor([[0.625, 0, 0.375, 0]]))
    torch.testing.assert_close(Sampler(top_p=0.81).probs(logits), torch.tensor([[0.5, 0, 0.3, 0.15]]) / 0.95)
    torch.testing.assert_close(Sampler(temperature=0.5).probs(logits), (logits * 2).softmax(-1))


def test_bad_requests_are_refused_with_the_reason(model):
    with pytest.raises(ValueError, match="n_mtp_layers=0"):
        generate(Transformer(ModelConfig.from_preset("tiny", n_layers=1, n_mtp_layers=0)), [1], 2, speculative=True)
    with pytest.raises(ValueError, match="max_seq_len=512"):
        generate(model, [1] * 500, 13)
    with pytest.raises(ValueError, match="max_batch_size=8"):
        generate(model, [[1]] * 9, 1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, [1, 2048], 1)
    with pytest.raises(ValueError, match="cache must be one of"):
        generate(model, [1], 1, cache="latent")


# ---------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def text_folders(tmp_path_factory):
    """A training-run folder and a hub-format checkpoint folder holding the same tiny model and tokenizer."""
    from minideepseek.checkpoint import save_pretrained
    from minideepseek.data import train_tokenizer
    from minideepseek.runfolder import write_json
    from minideepseek.train import save_checkpoint

    tokenizer = train_tokenizer(["def add(a, b):\n    return a + b\n", "class Point:\n    x: int\n"] * 20, 300)
    torch.manual_seed(0)
    m = Transformer(ModelConfig.from_preset("tiny", n_layers=2)).eval()
    run = tmp_path_factory.mktemp("run")
    write_json(run / "config.json", m.config.to_dict())
    tokenizer.save(str(run / "tokenizer.json"))
    never_stepped = SimpleNamespace(state={}, param_groups=[])  # an optimizer with no moments yet
    save_checkpoint(run, m, never_stepped, {"step": 1})
    hub = tmp_path_factory.mktemp("hub")
    save_pretrained(m, hub, progress=False)
    tokenizer.save(str(hub / "tokenizer.json"))
    return m, tokenizer, run, hub


def test_cli_generate_streams_the_greedy_continuation_from_a_run_and_a_checkpoint(text_folders, capsys):
    from minideepseek.cli import main

    m, tokenizer, run, hub = text_folders
    eot = tokenizer.token_to_id("<|endoftext|>")
    prompt_ids = [eot] + tokenizer.encode("def add", add_special_tokens=False).ids
    new = generate(m, prompt_ids, 8, temperature=0, eos_id=eot)[len(prompt_ids):]
    expected = "def add" + tokenizer.decode(new, skip_special_tokens=True)
    for folder in (run, hub):
        main(["generate", "--run", str(folder), "--prompt", "def add", "--max-new-tokens", "8", "--temperature", "0",
              "--speculative", "--device", "cpu"])
        captured = capsys.readouterr()
        assert captured.out.rstrip("\n") == expected
        assert "tokens/s" in captured.err and "MTP drafts accepted" in captured.err


def test_cli_chat_answers_each_line_until_quit(text_folders, capsys, monkeypatch):
    import io

    from minideepseek.cli import main

    _, _, run, _ = text_folders
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/reset\nhow are you\n/quit\nnever read\n"))
    main(["chat", "--run", str(run), "--max-new-tokens", "5", "--seed", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("model> ") == 2 and "never read" not in out


def test_cli_generate_names_a_missing_folder(tmp_path):
    from minideepseek.cli import main

    with pytest.raises(SystemExit, match="is not a folder"):
        main(["generate", "--run", str(tmp_path / "nothing"), "--prompt", "x"])
    with pytest.raises(SystemExit, match="no tokenizer"):
        from minideepseek.checkpoint import save_pretrained

        save_pretrained(Transformer(ModelConfig.from_preset("tiny", n_layers=1)), tmp_path, progress=False)
        main(["generate", "--run", str(tmp_path), "--prompt", "x"])


def test_a_model_trains_after_generating_first():
    """generate() runs under inference mode; the RoPE table it builds first must still serve backward."""
    model = Transformer(ModelConfig.from_preset("tiny", n_mtp_layers=0))
    generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=2)
    model(torch.randint(0, 100, (1, 8))).sum().backward()
    assert model.embed.weight.grad is not None
