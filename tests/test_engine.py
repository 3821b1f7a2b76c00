"""Engine: greedy equality with HF generate (native Llama/Qwen2/Qwen3 and generic GPT-2 paths), sampling
statistics, log-probs, stop handling, seeds, continuous batching, validation, live weights."""

from __future__ import annotations

import copy
import math
import os
import random
from collections import Counter

import pytest
import torch

from slowthink.engine import Engine, SamplingParams
from slowthink.models import build_model
from slowthink.tasks.arithmetic import Arithmetic
from slowthink.tokenizer import render_example, render_prompt

MAX_NEW = 48


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine OpenMP spinning makes two
    threads many times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prompts(tok):
    """System-2 prompts of different lengths (1- to 3-digit operands)."""
    task, rng = Arithmetic(op="mul", max_level=3), random.Random(7)
    out = [render_prompt(tok, task.prompt(task.sample(rng, level), "system2"), "system2")
           for level in (1, 3, 2, 1, 3, 2)]
    assert len({len(p) for p in out}) >= 3
    return out


def _train(model, tok, steps: int, lr: float, op: str = "mul", seed: int = 0):
    """A few AdamW steps on a fixed batch of worked solutions: completions then have structure and end
    with eos, and logits are peaked (a random-init model just repeats one token)."""
    task, rng = Arithmetic(op=op, max_level=2), random.Random(seed)
    rows = []
    for _ in range(16):
        p = task.sample(rng, rng.randint(1, 2))
        rows.append(render_example(tok, task.prompt(p, "system2"), "system2",
                                   task.reference(p, "system2").completion()).ids)
    width, device = max(map(len, rows)), next(model.parameters()).device
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows], device=device)
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows], device=device)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _small_config(kind: str, tok):
    from transformers import GPT2Config, Qwen2Config, Qwen3Config

    common = dict(vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  bos_token_id=None, tie_word_embeddings=True)
    if kind == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=2, n_positions=256, **common)
    cls = {"qwen2": Qwen2Config, "qwen3": Qwen3Config}[kind]
    # GQA (4 query heads, 2 kv heads) and head_dim != hidden/heads for Qwen3.
    extra = {"head_dim": 24} if kind == "qwen3" else {}
    return cls(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, **extra, **common)


_MODELS: dict = {}
RECIPES = {"llama": dict(steps=200, lr=3e-3), "qwen2": dict(steps=40, lr=1e-2, op="add"),
           "qwen3": dict(steps=40, lr=1e-2), "gpt2": dict(steps=60, lr=5e-3)}


@pytest.fixture(scope="module")
def models(tok):
    """Trained tiny models by kind, built once per module."""

    def get(kind: str):
        if kind not in _MODELS:
            if kind == "llama":
                model = build_model("tiny", tok)
            else:
                from transformers import AutoModelForCausalLM

                torch.manual_seed(0)
                model = AutoModelForCausalLM.from_config(_small_config(kind, tok), dtype=torch.float32)
                model.generation_config.eos_token_id = tok.eos_token_id
                model.generation_config.pad_token_id = tok.pad_token_id
            _MODELS[kind] = _train(model, tok, **RECIPES[kind])
        return _MODELS[kind]

    return get


def hf_greedy(model, tok, prompt: list[int], max_new: int = MAX_NEW, ignore_eos: bool = False) -> list[int]:
    ids = torch.tensor([prompt], device=model.device)
    eos = {"eos_token_id": None} if ignore_eos else {}
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                             pad_token_id=tok.pad_token_id, **eos)
    return out[0, len(prompt):].tolist()


def min_margin(model, prompt: list[int], completion: list[int]) -> float:
    """Smallest gap between the top two logits along a greedy trajectory."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion], device=model.device)).logits[0, len(prompt) - 1:-1]
    top = logits.topk(2, -1).values
    return float((top[:, 0] - top[:, 1]).min())


GREEDY = SamplingParams(max_tokens=MAX_NEW, temperature=0)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3", "gpt2"])
def test_greedy_matches_hf_generate(kind, models, tok, prompts):
    model = models(kind)
    engine = Engine(model, tok)
    assert engine.native == (kind != "gpt2")
    out = engine.generate(prompts, sampling=GREEDY)  # all prompts (mixed lengths) in one batch
    for prompt, (c,) in zip(prompts, out):
        ref = hf_greedy(model, tok, prompt)
        assert min_margin(model, prompt, ref) > 1e-3, "near tie: the check would test rounding, not the engine"
        assert c.token_ids == ref
        assert c.finish_reason == ("stop" if ref[-1] == tok.eos_token_id else "length")


def test_n_greedy_copies_identical(models, tok, prompts):
    engine = Engine(models("llama"), tok)
    (cs,) = engine.generate([prompts[1]], n=3, sampling=GREEDY)
    assert len(cs) == 3 and all(c.token_ids == cs[0].token_ids and c.text == cs[0].text for c in cs)
    assert cs[0].token_ids == hf_greedy(models("llama"), tok, prompts[1])


def test_eos_and_length_finish(models, tok, prompts):
    engine = Engine(models("gpt2"), tok)
    (c,), = engine.generate([prompts[0]], sampling=GREEDY)
    assert c.finish_reason == "stop" and c.token_ids[-1] == tok.eos_token_id
    assert c.text == tok.decode(c.token_ids[:-1]) and "<|im_end|>" not in c.text
    think = tok.convert_tokens_to_ids(["<think>", "</think>"])
    assert engine._decode(think) == "<think></think>"  # think tags are kept in completion text
    (short,), = engine.generate([prompts[0]], sampling=SamplingParams(max_tokens=3, temperature=0))
    assert short.finish_reason == "length" and short.token_ids == c.token_ids[:3]
    assert short.text == tok.decode(c.token_ids[:3])
    long = SamplingParams(max_tokens=len(c.token_ids) + 5, temperature=0, ignore_eos=True)
    (forced,), = engine.generate([prompts[0]], sampling=long)
    assert forced.finish_reason == "length" and len(forced.token_ids) == long.max_tokens
    assert forced.token_ids[:len(c.token_ids)] == c.token_ids


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_stop_strings(kind, models, tok, prompts):
    engine = Engine(models(kind), tok)
    full, prompt = max(((cs[0], p) for cs, p in zip(engine.generate(prompts, sampling=GREEDY), prompts)),
                       key=lambda cp: len(cp[0].text))
    stop = full.text[len(full.text) // 2:][:2]
    cut = full.text.find(stop)
    (c,), = engine.generate([prompt], sampling=SamplingParams(max_tokens=MAX_NEW, temperature=0,
                                                              stop=("never there", stop)))
    assert c.finish_reason == "stop" and c.text == full.text[:cut]
    assert tok.decode(c.token_ids).endswith(stop) and c.token_ids == full.token_ids[:len(c.token_ids)]
    assert len(c.logprobs) == len(c.token_ids)


def _bpe(kind: str):
    """A small trained BPE tokenizer: byte-level (GPT-2/Qwen style) or Metaspace (SentencePiece style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    if kind == "bytes":
        tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tk.pre_tokenizer, tk.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
        alphabet = []
    corpus = ["so the answer is 42 → done", "naïve café über straße", "<think> 3*4=12 </think> 12", "Answer: yes"] * 20
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet))
    return PreTrainedTokenizerFast(tokenizer_object=tk)


@pytest.mark.parametrize("kind", ["bytes", "metaspace"])
def test_stop_search_skips_only_tokens_that_cannot_end_a_stop(kind):
    """The engine decodes a completion to look for stop strings only after a token that could end one;
    with multi-byte characters split across tokens and word-leading spaces, it still stops at the same token
    with the same text as a full search after every token."""
    from slowthink.engine import Request

    tok = _bpe(kind)

    class Stub:  # what Engine._find_stop uses
        tokenizer, _decode, _find_stop, _pieces = tok, Engine._decode, Engine._find_stop, {}

    rng = random.Random(0)
    texts = ["so the answer is 42 → done", "naïve café", "<think> 3*4=12 </think> 12", "yes Answer: no", "über"]
    sequences = [tok.encode(t) for t in texts] + [[rng.randrange(len(tok)) for _ in range(30)] for _ in range(200)]
    if kind == "bytes":  # "caf" + "é" split into its two bytes, one token each: the stop ends on a partial character
        (mapped, _), = tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str("é")
        sequences.append(tok.encode("caf") + tok.convert_tokens_to_ids(list(mapped)))
    checked = 0
    # (A stop ending in whitespace turns the shortcut off, so it gets a set of its own.)
    for stops, ids in [(stops, ids) for stops in (("é", "→ d", "</think>", "42"), ("Answer: ",)) for ids in sequences]:
        seq = Request([1], 1, SamplingParams()).sequences[0]
        expected = None
        for i, t in enumerate(ids):
            text = tok.decode(ids[:i + 1], skip_special_tokens=False)
            hits = [text.find(s) for s in stops if s in text]
            if hits:
                expected = (i, text[:min(hits)])
                break
        found = None
        for i, t in enumerate(ids):
            seq.token_ids.append(t)
            if (cut := Stub()._find_stop(seq, stops)) is not None:
                found = (i, cut)
                break
        assert found == expected, (ids, found, expected)
        checked += expected is not None
    assert checked >= 20  # stops were really found, in the texts and in random ids


def _first_token_probs(model, prompt, temperature=1.0):
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1]
    return torch.softmax(logits / temperature, -1)


def _chi_square(counts: Counter, probs: torch.Tensor, n: int) -> tuple[float, int]:
    """Pearson chi-square over tokens with expected count >= 5 (the rest pooled); returns (stat, dof)."""
    expected = (probs * n).tolist()
    big = [i for i, e in enumerate(expected) if e >= 5]
    obs = [counts.get(i, 0) for i in big] + [n - sum(counts.get(i, 0) for i in big)]
    exp = [expected[i] for i in big] + [n - sum(expected[i] for i in big)]
    pairs = [(o, e) for o, e in zip(obs, exp) if e > 1e-9]
    return sum((o - e) ** 2 / e for o, e in pairs), len(pairs) - 1


def test_sampling_matches_softmax(models, tok, prompts):
    model, prompt, n, temp = models("llama"), prompts[3], 3000, 2.0
    engine = Engine(model, tok)
    probs = _first_token_probs(model, prompt, temp)  # tempered: a trained model's first token is near-certain
    assert probs.max() < 0.9, "first token too peaked for a distribution test"
    (cs,) = engine.generate([prompt], n=n, sampling=SamplingParams(max_tokens=1, temperature=temp, seed=1))
    counts = Counter(c.token_ids[0] for c in cs)
    stat, dof = _chi_square(counts, probs, n)
    assert dof >= 2 and stat < dof + 5 * math.sqrt(2 * dof), (stat, dof)
    tv = 0.5 * sum(abs(counts.get(i, 0) / n - float(p)) for i, p in enumerate(probs))
    assert tv < 0.05


def test_top_p_keeps_to_the_nucleus(models, tok, prompts):
    model, prompt, n, top_p, temp = models("llama"), prompts[3], 2000, 0.6, 2.5
    probs = _first_token_probs(model, prompt, temp)
    sorted_p, order = probs.sort(descending=True)
    k = int((sorted_p.cumsum(0) < top_p).sum()) + 1  # smallest prefix with mass >= top_p
    nucleus = set(order[:k].tolist())
    assert 2 <= k < int((probs > 1e-4).sum()), "nucleus should be a strict, non-trivial subset"
    (cs,) = Engine(model, tok).generate([prompt], n=n, sampling=SamplingParams(
        max_tokens=1, temperature=temp, top_p=top_p, seed=3))
    counts = Counter(c.token_ids[0] for c in cs)
    assert set(counts) <= nucleus
    renorm = torch.zeros_like(probs)
    renorm[order[:k]] = sorted_p[:k] / sorted_p[:k].sum()
    stat, dof = _chi_square(counts, renorm, n)
    assert stat < dof + 5 * math.sqrt(2 * max(dof, 1)), (stat, dof)
    # log-probs are under the temperature-scaled distribution, before truncation
    for c in cs[:20]:
        assert math.isclose(c.logprobs[0], math.log(probs[c.token_ids[0]]), abs_tol=1e-4)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_logprobs_match_hf_logits(kind, models, tok, prompts):
    model, temp = models(kind), 0.8
    engine = Engine(model, tok)
    out = engine.generate(prompts[:2], n=3, sampling=SamplingParams(max_tokens=20, temperature=temp, seed=0))
    greedy = engine.generate(prompts[:1], sampling=SamplingParams(max_tokens=20, temperature=0))
    for prompt, cs, t in [(prompts[0], out[0], temp), (prompts[1], out[1], temp), (prompts[0], greedy[0], 1.0)]:
        for c in cs:
            with torch.no_grad():
                logits = model(torch.tensor([prompt + c.token_ids])).logits[0, len(prompt) - 1:-1]
            ref = torch.log_softmax(logits / t, -1).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
            assert torch.allclose(torch.tensor(c.logprobs), ref, atol=1e-4)


def test_seed_reproducible_and_batch_independent(models, tok, prompts):
    engine = Engine(models("llama"), tok)
    sp = SamplingParams(max_tokens=16, temperature=1.0, seed=42)
    a = engine.generate(prompts[:2], n=2, sampling=sp)
    b = engine.generate(prompts[:2], n=2, sampling=sp)
    assert [[c.token_ids for c in cs] for cs in a] == [[c.token_ids for c in cs] for cs in b]
    c = engine.generate(prompts[:2], n=2, sampling=SamplingParams(max_tokens=16, temperature=1.0, seed=43))
    assert [[x.token_ids for x in cs] for cs in a] != [[x.token_ids for x in cs] for cs in c]
    # A seeded request samples the same tokens whatever else shares the batch.
    alone = engine.add(prompts[0], 2, sp)
    while not alone.done:
        engine.step()
    engine.add(prompts[3], 5, SamplingParams(max_tokens=30, temperature=1.0))
    crowded = engine.add(prompts[0], 2, sp)
    while not crowded.done:
        engine.step()
    assert [x.token_ids for x in alone.completions] == [x.token_ids for x in crowded.completions]


def test_add_step_interleaving_and_cancel(models, tok, prompts):
    """Requests added between steps join the running batch; a cancelled one frees its slot and keeps its tokens
    so far. The first and the cancelled request ignore eos, so both are certainly still running after 3 steps
    whatever the tiny model writes (it may end its turn after a token or two)."""
    model = models("llama")
    running = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    refs = {i: hf_greedy(model, tok, prompts[i], running.max_tokens, ignore_eos=True) for i in (0, 1)}
    refs[2] = hf_greedy(model, tok, prompts[2])
    engine = Engine(model, tok, max_batch=5)
    first = engine.add(prompts[0], 2, running)
    sampled = engine.add(prompts[4], 2, SamplingParams(max_tokens=MAX_NEW, temperature=1.0, top_p=0.9))
    doomed = engine.add(prompts[1], 1, running)
    finished = []  # the sampled request may draw end-of-turn within the first steps
    for _ in range(3):
        finished += engine.step()
    assert all(len(s.token_ids) == 3 for s in first.sequences)  # streaming view
    late = engine.add(prompts[2], 2, GREEDY)  # waits for free slots, then joins the running batch
    engine.cancel(doomed)
    assert doomed.done and doomed.completions[0].finish_reason == "cancelled"
    assert doomed.completions[0].token_ids == refs[1][:3]
    while engine.has_unfinished():
        finished += engine.step()
    assert {id(r) for r in finished} == {id(first), id(sampled), id(late)}
    assert all(c.finish_reason == "length" for c in first.completions)
    for req, i in [(first, 0), (late, 2)]:
        assert all(c.token_ids == refs[i] for c in req.completions)


def test_small_max_batch_reuses_slots(models, tok, prompts):
    """More sequences than slots: finished slots are refilled (cache rows moved) and results stay exact."""
    for kind in ("llama", "gpt2"):
        model = models(kind)
        out = Engine(model, tok, max_batch=3).generate(prompts, sampling=GREEDY)
        assert [cs[0].token_ids for cs in out] == [hf_greedy(model, tok, p) for p in prompts]


def test_uses_current_weights_and_restores_training_flag(models, tok, prompts):
    model = copy.deepcopy(models("llama"))
    engine = Engine(model, tok)
    before = engine.generate(prompts[:3], sampling=GREEDY)
    _train(model, tok, steps=3, lr=1e-2, seed=1)  # optimizer steps update the parameters in place
    model.train()
    after = engine.generate(prompts[:3], sampling=GREEDY)
    assert model.training
    model.eval()
    refs = [hf_greedy(model, tok, p) for p in prompts[:3]]
    assert [cs[0].token_ids for cs in after] == refs
    assert [cs[0].token_ids for cs in before] != refs
    with torch.no_grad():  # replacing a parameter object is noticed too
        model.model.layers[0].mlp.up_proj.weight = torch.nn.Parameter(model.model.layers[0].mlp.up_proj.weight * 3)
    assert [cs[0].token_ids for cs in engine.generate(prompts[:3], sampling=GREEDY)] == \
        [hf_greedy(model, tok, p) for p in prompts[:3]]


def test_steps_run_in_eval_mode_and_restore_each_modules_flag(models, tok, prompts):
    model = copy.deepcopy(models("gpt2"))  # GPT-2's dropout (0.1) would change tokens in training mode
    model.eval()
    refs = [hf_greedy(model, tok, p) for p in prompts[:3]]
    model.train()
    model.transformer.h[0].eval()  # a submodule its owner keeps in eval mode stays so
    flags = {name: m.training for name, m in model.named_modules()}
    out = Engine(model, tok).generate(prompts[:3], sampling=GREEDY)
    assert [cs[0].token_ids for cs in out] == refs
    assert {name: m.training for name, m in model.named_modules()} == flags


@pytest.mark.parametrize("kwargs", [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(max_tokens=0),
                                    dict(temperature=float("nan")), dict(stop=("",)), dict(seed=1.5)])
def test_sampling_params_validation(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_a_sequence_ends_at_the_models_context(kind, models, tok, prompts):
    """No position past ``max_position_embeddings`` is decoded: a completion that would run past it ends there with
    "length", and a prompt that fills the context is refused."""
    model = models(kind)
    engine = Engine(model, tok)
    assert engine.context == model.config.max_position_embeddings
    engine.context = len(prompts[0]) + 4  # as if the model were built for only 4 more positions
    long = SamplingParams(max_tokens=50, temperature=0, ignore_eos=True)
    (c,), = engine.generate([prompts[0]], sampling=long)
    assert c.finish_reason == "length" and len(c.token_ids) == 4
    with pytest.raises(ValueError, match="context is"):
        engine.add(prompts[0] + [5] * 4, 1)


def test_bad_requests(models, tok):
    engine = Engine(models("llama"), tok)
    with pytest.raises(ValueError):
        engine.add([], 1)
    with pytest.raises(ValueError):
        engine.add([5], 0)
    assert SamplingParams(stop="x").stop == ("x",)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_greedy_matches_hf_and_sampling_runs(models, tok, prompts):
    for kind in ("llama", "qwen3", "gpt2"):
        model = copy.deepcopy(models(kind)).cuda()
        engine = Engine(model, tok)
        out = engine.generate(prompts, sampling=GREEDY)
        assert [cs[0].token_ids for cs in out] == [hf_greedy(model, tok, p) for p in prompts]
        sp = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.8, seed=5)
        a, b = engine.generate(prompts[:2], n=4, sampling=sp), engine.generate(prompts[:2], n=4, sampling=sp)
        assert [[c.token_ids for c in cs] for cs in a] == [[c.token_ids for c in cs] for cs in b]


def test_cache_grows_while_running(tok, prompts):
    """Wide heads (head_dim 64 > cache length), GQA with one kv head, and a cache that must grow (more
    rows, longer) while a request is running: all still equal to HF."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, bos_token_id=None)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # peaked logits: random init repeats a token, but without near ties
    engine = Engine(model, tok)
    first = engine.add([5, 6, 7], 1, SamplingParams(max_tokens=6, temperature=0))
    engine.step()
    assert engine.backend.cache.shape[1] == 1 and engine.backend.cache.shape[4] < 64
    second = engine.add(prompts[1], 3, SamplingParams(max_tokens=30, temperature=0))
    while engine.has_unfinished():
        engine.step()
    assert engine.backend.cache.shape[1] >= 4
    assert first.completions[0].token_ids == hf_greedy(model, tok, [5, 6, 7], 6)
    assert all(c.token_ids == hf_greedy(model, tok, prompts[1], 30) for c in second.completions)


def _decode_both_ways(backend, tokens, fast: str):
    """One decode step with ``backend.<fast>`` (the C++ kernels or the CUDA graphs), then the same step from
    the same state with the plain-torch step: (fast logits, plain logits, cache after the fast step). The state
    is restored in place, since captured graphs hold the cache's and positions' addresses."""
    cache, pos, lens = backend.cache.clone(), backend.pos.clone(), list(backend.lens)
    fast_logits = backend.decode(tokens).clone()
    after = backend.cache.clone()
    backend.cache.copy_(cache), backend.pos.copy_(pos)
    backend.lens, saved = lens, getattr(backend, fast)
    setattr(backend, fast, None)
    plain = backend.decode(tokens)
    setattr(backend, fast, saved)
    return fast_logits, plain, after


def _fixed_shape_engine(model, tok, max_batch: int) -> Engine:
    """An engine whose decode runs the fixed-shape step that slowthink/engine/graphs.py captures on a GPU, here
    run eagerly: padded rows, bucketed cache width."""
    from slowthink.engine.graphs import DecodeGraphs

    engine = Engine(model, tok, max_batch=max_batch)
    engine.backend.graphs = DecodeGraphs(engine.backend, capture=False)
    return engine


@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])  # (the llama fixture's answers are too short to retire rows)
def test_fixed_shape_decode_step_matches_hf(kind, models, tok, prompts):
    """Rows padded up to a bucket (their stale positions and tokens included) and attention over a padded
    cache width change nothing: greedy output still equals HF, while slots are retired and refilled."""
    model = models(kind)
    engine = _fixed_shape_engine(model, tok, max_batch=5)  # 6 prompts, 5 slots: refilled, then retired
    backend, seen = engine.backend, []
    step = backend.graphs._step
    backend.graphs._step = lambda rows, width: seen.append((len(backend.lens), rows, width)) or step(rows, width)
    out = engine.generate(prompts, sampling=GREEDY)
    assert [cs[0].token_ids for cs in out] == [hf_greedy(model, tok, p) for p in prompts]
    assert any(rows > running for running, rows, _ in seen), seen  # padding rows were decoded
    length = backend.cache.shape[4]
    assert all(width == length or width >= 64 and width & (width - 1) == 0 for _, _, width in seen)


def test_fixed_shape_step_follows_weight_updates(models, tok, prompts):
    """In-place optimizer steps keep the addresses a captured graph reads (the fused weights are copied
    into); replacing a parameter object moves one and is noticed."""
    model = copy.deepcopy(models("llama"))
    engine = _fixed_shape_engine(model, tok, max_batch=8)
    backend = engine.backend
    engine.generate(prompts[:3], sampling=GREEDY)
    generation, qkv = backend.weights_generation, backend.layers[0].qkv
    _train(model, tok, steps=3, lr=1e-2, seed=1)
    assert [cs[0].token_ids for cs in engine.generate(prompts[:3], sampling=GREEDY)] == \
        [hf_greedy(model, tok, p) for p in prompts[:3]]
    assert backend.weights_generation == generation and backend.layers[0].qkv is qkv
    with torch.no_grad():  # by reference (o_proj's transposed view, the embedding): new addresses
        for module in (model.model.layers[1].self_attn.o_proj, model.model.embed_tokens):
            module.weight = torch.nn.Parameter(module.weight * 1.5)
    assert [cs[0].token_ids for cs in engine.generate(prompts[:3], sampling=GREEDY)] == \
        [hf_greedy(model, tok, p) for p in prompts[:3]]
    assert backend.weights_generation > generation


def test_row_and_width_buckets():
    from slowthink.engine.graphs import row_bucket, width_bucket

    assert [row_bucket(n, 256) for n in (1, 3, 5, 17, 33, 64, 65, 200, 256)] == [1, 4, 8, 24, 48, 64, 96, 256, 256]
    assert row_bucket(300, 512) == 384 and row_bucket(5, 5) == 5 and row_bucket(3, 3) == 3
    assert [width_bucket(n, 4096) for n in (0, 10, 63, 64, 100, 500)] == [64, 64, 64, 128, 128, 512]
    assert width_bucket(100, 112) == 112


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_match_hf_and_survive_training(models, tok, prompts):
    """The captured decode step: greedy equal to HF (and to the eager step), graphs reused across in-place
    optimizer steps, re-captured when a parameter object is replaced or the cache grows."""
    for kind in ("llama", "qwen2", "qwen3"):
        model = copy.deepcopy(models(kind)).cuda()
        engine = Engine(model, tok, max_batch=5)
        assert engine.backend.graphs is not None and engine.backend.graphs.capture
        out = engine.generate(prompts, sampling=GREEDY)
        assert [cs[0].token_ids for cs in out] == [hf_greedy(model, tok, p) for p in prompts]
        assert engine.backend.graphs.captured > 0
    generation = engine.backend.weights_generation
    _train(model, tok, steps=3, lr=1e-2, seed=1)
    assert [cs[0].token_ids for cs in engine.generate(prompts, sampling=GREEDY)] == \
        [hf_greedy(model, tok, p) for p in prompts]
    assert engine.backend.weights_generation == generation
    with torch.no_grad():  # both read by reference (o_proj through a transposed view): re-captured
        for module in (model.model.layers[0].self_attn.o_proj, model.model.embed_tokens):
            module.weight = torch.nn.Parameter(module.weight * 1.5)
    long = SamplingParams(max_tokens=200, temperature=0)  # past the cache's first length: it grows
    captured = engine.backend.graphs.captured
    assert [cs[0].token_ids for cs in engine.generate(prompts[:2], sampling=long)] == \
        [hf_greedy(model, tok, p, 200) for p in prompts[:2]]
    assert engine.backend.weights_generation > generation and engine.backend.graphs.captured > captured
    # Teacher-forced, 150 steps (widths 64, 128, all 192; 6 rows padded to 8): graph logits == eager logits.
    backend = Engine(model, tok, max_batch=8).backend
    with torch.inference_mode():
        backend.sync()
        backend.prefill(prompts + prompts[:2], [1] * 8, [len(p) + 160 for p in prompts + prompts[:2]])
        backend.keep(list(range(len(prompts))))
        tokens = torch.arange(len(prompts), device="cuda") % 20 + 5
        for _ in range(150):
            graphed, eager, after = _decode_both_ways(backend, tokens, "graphs")
            torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-4)
            # (Padding rows wrote to position 0 of the free slots 6 and 7, which nothing reads.)
            torch.testing.assert_close(after[:, :6], backend.cache[:, :6], rtol=1e-4, atol=1e-4)
            tokens = eager.argmax(-1)
    length = backend.cache.shape[4]  # 192: the last width bucket is the cache's whole length
    assert length > 128 and set(backend.graphs.graphs) >= {(8, 64), (8, 128), (8, length)}


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_cpp_decode_step_matches_the_torch_step(kind, models, tok, prompts):
    """The C++ decode step (slowthink/engine/native) computes what the plain-torch step does, GQA and q/k/v bias
    included, for rows of different lengths; it is built wherever a C++ compiler is."""
    import shutil

    from slowthink.engine.native import decode_kernels

    if shutil.which("c++") is None or os.environ.get("SLOWTHINK_NATIVE") == "0":
        pytest.skip("no C++ compiler on this machine, or SLOWTHINK_NATIVE=0: the engine runs its torch step")
    assert decode_kernels() is not None
    model = models(kind)
    engine = Engine(model, tok)
    backend = engine.backend
    assert backend.kernels is not None
    with torch.inference_mode():
        backend.sync()
        backend.prefill(prompts, [2] * len(prompts), [len(p) + 8 for p in prompts])
        tokens = torch.arange(2 * len(prompts)) % 20 + 5
        for _ in range(4):
            native, plain, after = _decode_both_ways(backend, tokens, "kernels")
            torch.testing.assert_close(native, plain, rtol=1e-4, atol=1e-4)  # summation order only
            torch.testing.assert_close(after, backend.cache, rtol=1e-4, atol=1e-4)
            tokens = plain.argmax(-1)
