#!/usr/bin/env python3
"""Build tiny random-weight reference models with the real Hugging Face classes.

Writes test/fixtures/models/<name>/ for each fixture: config.json, model.safetensors (float32),
tokenizer.json (a WordPiece vocabulary of whole words "w3".."wN", so that the folder loads as a complete
Hugging Face model), and reference.json with the outputs of the Hugging Face forward pass:
input ids, logits of every position, per-position and mean NLL, greedy continuations and a windowed
perplexity in the papers' protocol.

Reference numbers are computed in float64 from the saved float32 weights (the exact result the float32
weights define); the float32 Hugging Face forward is recorded beside them as a measure of float32 noise.

Usage (from the repository root):
    python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch transformers safetensors numpy
    /tmp/hfvenv/bin/python tools/make_hf_fixtures.py [--out test/fixtures/models]
Reference perplexities of the shared models (see test/fixtures/models/README.md):
    /tmp/hfvenv/bin/python tools/make_hf_fixtures.py --brown ../shared/models/tinylm-brown ../shared/data/brown-valid.txt
    /tmp/hfvenv/bin/python tools/make_hf_fixtures.py --gguf models/stories260K/stories260K.gguf ids.json  # + gguf accelerate

Deterministic: every model draws its weights from torch.Generator seeded per fixture. Licence: MIT.
"""

import argparse
import copy
import json
import math
import os
import subprocess
import sys

import torch
import transformers
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers, decoders

SEQ_LEN = 17  # tokens per reference sequence (BOS + 16 random ids)
NUM_SEQS = 2
GREEDY_NEW = 6
PPL_WINDOW = 8  # windowed perplexity over the concatenated sequences: windows 8,8,8,8,2
LOGIT_POSITIONS = [0, 1, 2, 3, SEQ_LEN - 1]  # full-vocabulary logits kept for these; nll covers every position
MIN_MARGIN = 2e-3  # smallest accepted top-1/top-2 logit gap on the greedy path (float32 noise is ~1e-6)

FIXTURES = [
    {
        "name": "llama-gqa-tiny",
        "cls": "LlamaForCausalLM",
        "what": "LLaMA, GQA 4 query / 2 KV heads, head_dim 16, untied lm_head, rope_theta 1e4",
        "seed": 1001,
        "config_style": "v4",
        "config": dict(
            model_type="llama",
            vocab_size=101,
            hidden_size=64,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            max_position_embeddings=64,
            tie_word_embeddings=False,
            attention_bias=False,
            mlp_bias=False,
        ),
    },
    {
        "name": "llama-tied-tiny",
        "cls": "LlamaForCausalLM",
        "what": "LLaMA, tied embeddings (no lm_head tensor), MHA 4/4 heads of 12, rope_theta 5e5, eps 1e-6",
        "seed": 1002,
        "config": dict(
            model_type="llama",
            vocab_size=113,
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            rms_norm_eps=1e-6,
            rope_theta=500000.0,
            max_position_embeddings=64,
            tie_word_embeddings=True,
            attention_bias=False,
            mlp_bias=False,
        ),
    },
    {
        "name": "qwen2-tiny",
        "cls": "Qwen2ForCausalLM",
        "what": "Qwen2, q/k/v biases (random, non-zero), GQA 4/2 heads, untied, rope_theta 1e6",
        "seed": 1003,
        "config": dict(
            model_type="qwen2",
            vocab_size=127,
            hidden_size=64,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            max_position_embeddings=64,
            tie_word_embeddings=False,
            use_sliding_window=False,
        ),
    },
    {
        "name": "mistral-tiny",
        "cls": "MistralForCausalLM",
        "what": "Mistral, GQA 4/1 heads, head_dim 16 != hidden/heads (48/4), sliding window 4096 (unused)",
        "seed": 1004,
        "config_style": "v4",
        "config": dict(
            model_type="mistral",
            vocab_size=97,
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            max_position_embeddings=64,
            sliding_window=4096,
            tie_word_embeddings=False,
        ),
    },
]

# Not yet supported by the library: a sliding window shorter than the reference sequences. The TypeScript test
# accepts a refusal (OptionError) or outputs equal to these.
FIXTURES.append({
    "name": "mistral-swa-tiny",
    "cls": "MistralForCausalLM",
    "what": "Mistral with sliding_window 6 < 17 tokens: each query sees only the 6 latest positions",
    "seed": 1005,
    "config_style": "v4",
    "config": dict(
        model_type="mistral",
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=64,
        sliding_window=6,
        tie_word_embeddings=False,
    ),
})

# Sharded checkpoint: several model-0000x-of-0000n.safetensors files and model.safetensors.index.json, as
# save_pretrained writes for large models.
FIXTURES.append({
    "name": "llama-sharded-tiny",
    "cls": "LlamaForCausalLM",
    "what": "LLaMA saved in 40 KB shards with model.safetensors.index.json, MHA 2/2 heads, untied",
    "seed": 1006,
    "shard": "40KB",
    "config": dict(
        model_type="llama",
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    ),
})

# RoPE scaling. llama3: with θ 1e4, head_dim 16 and original_max_position_embeddings 32 the pair wavelengths
# 6.3 | 19.9 | 62.8, 199, … fall in all three bands (kept < 32/4 = 8 ≤ smoothed ≤ 32 < divided by the factor).
FIXTURES.append({
    "name": "llama3-rope-tiny",
    "cls": "LlamaForCausalLM",
    "what": "LLaMA with rope_scaling llama3 (factor 8, low 1, high 4, original 32): all three frequency bands",
    "seed": 1007,
    "config_style": "v4",
    "config": dict(
        model_type="llama",
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        rms_norm_eps=1e-5,
        rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=32),
        max_position_embeddings=256,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    ),
})
FIXTURES.append({
    "name": "llama-linear-rope-tiny",
    "cls": "LlamaForCausalLM",
    "what": "LLaMA with rope_scaling linear (factor 4: positions divided by 4), transformers 5 layout",
    "seed": 1008,
    "config": dict(
        model_type="llama",
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        rms_norm_eps=1e-5,
        rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=4.0),
        max_position_embeddings=256,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    ),
})

BOS, EOS = 1, 2
FIRST_WORD = 3  # ids 0..2 are <unk>, <s>, </s>


def make_config(spec):
    cfg = dict(spec["config"])
    cfg.update(bos_token_id=BOS, eos_token_id=EOS, hidden_act="silu", initializer_range=0.02)
    cls = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    cls._attn_implementation = "eager"
    return cls


def to_v4_config(path):
    """Rewrite a transformers-5 config.json in the 4.x layout (top-level rope_theta, torch_dtype), which most
    published checkpoints still use; transformers 5 reads both, so the fixtures cover both."""
    with open(path) as f:
        cfg = json.load(f)
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else rope
    cfg["torch_dtype"] = cfg.pop("dtype")
    with open(path, "w") as f:
        json.dump(dict(sorted(cfg.items())), f, indent=2)
        f.write("\n")


def randomize(model, gen):
    """Weights with real dynamics: O(1) logits and non-uniform attention (HF's 0.02 init is near-uniform)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))  # Qwen2 q/k/v biases: clearly non-zero
            elif "embed_tokens" in name:
                # tied: the embedding is also lm_head, whose rows must be small for O(1) logits
                std = 2.5 / math.sqrt(p.shape[1]) if model.config.tie_word_embeddings else 1.0
                p.copy_(std * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[1]
                scale = 1.6 if any(s in name for s in ("q_proj", "k_proj")) else 1.0
                p.copy_(scale * torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))


def make_tokenizer(vocab_size):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for i in range(FIRST_WORD, vocab_size):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    return tok


def forward_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits  # batch×seq×vocab


def nll_of(logits, ids):
    """Per-position NLL (float64) of ids[:, 1:] under logits[:, :-1]: batch×(seq-1)."""
    lp = torch.log_softmax(logits.double(), dim=-1)
    return -lp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)


def greedy(model, ids, n):
    """Greedy continuation by full recomputation (no cache); returns tokens and the smallest top-2 gap."""
    out, margin = [], math.inf
    cur = ids
    for _ in range(n):
        last = forward_logits(model, cur)[0, -1]
        top = torch.topk(last, 2).values
        margin = min(margin, float(top[0] - top[1]))
        nxt = int(torch.argmax(last))
        out.append(nxt)
        cur = torch.cat([cur, torch.tensor([[nxt]])], dim=1)
    return out, margin


def windowed_nll(model, ids, window):
    """Papers' protocol over one token stream: consecutive windows, last partial window of >= 2 counts."""
    total, count = 0.0, 0
    for s in range(0, ids.shape[1], window):
        w = ids[:, s:s + window]
        if w.shape[1] < 2:
            break
        nll = nll_of(forward_logits(model, w), w)
        total += float(nll.sum())
        count += nll.numel()
    return total / count, count


def build(spec, out_root):
    name = spec["name"]
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(spec["seed"])
    cfg = make_config(spec)
    cls = getattr(transformers, spec["cls"])
    model = cls(cfg).to(torch.float32).eval()
    randomize(model, gen)
    if cfg.tie_word_embeddings:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    if "shard" in spec:
        model.save_pretrained(out, max_shard_size=spec["shard"])
    else:
        model.save_pretrained(out)
    for extra in ("generation_config.json",):
        p = os.path.join(out, extra)
        if os.path.exists(p):
            os.remove(p)
    if spec.get("config_style") == "v4":
        to_v4_config(os.path.join(out, "config.json"))
    make_tokenizer(cfg.vocab_size).save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, f, indent=2)
        f.write("\n")

    # Reload what was written: the references describe the files, not the in-memory model.
    tensors = {}
    for f in sorted(os.listdir(out)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(out, f)))
    shards = sum(f.endswith(".safetensors") for f in os.listdir(out))
    assert (shards > 1) == ("shard" in spec), f"{name}: {shards} safetensors files"
    assert all(t.dtype == torch.float32 for t in tensors.values()), "all tensors float32"
    assert ("lm_head.weight" in tensors) == (not cfg.tie_word_embeddings), "lm_head present iff untied"
    if spec["cls"] == "Qwen2ForCausalLM":
        for i in range(cfg.num_hidden_layers):
            for p in ("q_proj", "k_proj", "v_proj"):
                b = tensors[f"model.layers.{i}.self_attn.{p}.bias"]
                assert float(b.abs().min()) > 0 and float(b.abs().mean()) > 0.1, "biases non-zero"
    m32 = cls.from_pretrained(out, attn_implementation="eager", dtype=torch.float32).eval()
    m64 = cls.from_pretrained(out, attn_implementation="eager", dtype=torch.float64).eval()
    window_effect = None
    if getattr(cfg, "sliding_window", None) is not None and cfg.sliding_window < SEQ_LEN:
        full = cls.from_pretrained(out, attn_implementation="eager", dtype=torch.float64, sliding_window=None)
        probe = torch.randint(FIRST_WORD, cfg.vocab_size, (1, SEQ_LEN), generator=torch.Generator().manual_seed(0))
        window_effect = float((forward_logits(full.eval(), probe) - forward_logits(m64, probe)).abs().max())
        assert window_effect > 0.05, f"{name}: the sliding window barely matters ({window_effect})"
    theta = m32.config.rope_parameters["rope_theta"]
    want = spec["config"].get("rope_theta") or spec["config"]["rope_parameters"]["rope_theta"]
    assert theta == want, f"{name}: reloaded rope_theta {theta}"
    scaling_effect = None
    if m64.config.rope_parameters.get("rope_type", "default") != "default":
        plain_cfg = copy.deepcopy(m64.config)
        plain_cfg.rope_parameters = {"rope_type": "default", "rope_theta": theta}
        plain = cls(plain_cfg).to(torch.float64).eval()
        plain.load_state_dict(m64.state_dict())
        probe = torch.randint(FIRST_WORD, cfg.vocab_size, (1, SEQ_LEN), generator=torch.Generator().manual_seed(0))
        scaling_effect = float((forward_logits(plain, probe) - forward_logits(m64, probe)).abs().max())
        assert scaling_effect > 0.05, f"{name}: the RoPE scaling barely matters ({scaling_effect})"

    ids_gen = torch.Generator().manual_seed(spec["seed"] + 7)
    body = torch.randint(FIRST_WORD, cfg.vocab_size, (NUM_SEQS, SEQ_LEN - 1), generator=ids_gen)
    ids = torch.cat([torch.full((NUM_SEQS, 1), BOS), body], dim=1)

    logits64 = forward_logits(m64, ids)
    logits32 = forward_logits(m32, ids)
    f32_dev = float((logits32.double() - logits64).abs().max())
    nll = nll_of(logits64, ids)
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))

    seqs = []
    for b in range(NUM_SEQS):
        g64, margin = greedy(m64, ids[b:b + 1], GREEDY_NEW)
        g32, _ = greedy(m32, ids[b:b + 1], GREEDY_NEW)
        assert g64 == g32, f"{name}: float32 and float64 greedy paths differ"
        assert margin > MIN_MARGIN, f"{name}: greedy margin {margin} too small, pick another seed"
        text = " ".join(f"w{int(t)}" for t in ids[b, 1:])
        enc = tok.encode(text, add_special_tokens=False).ids
        assert enc == ids[b, 1:].tolist(), "tokenizer round trip"
        seqs.append({
            "input_ids": ids[b].tolist(),
            "text": text,
            "logits_positions": LOGIT_POSITIONS,
            "logits": [[round(float(v), 6) for v in logits64[b, t]] for t in LOGIT_POSITIONS],
            "nll": [round(float(v), 9) for v in nll[b]],
            "mean_nll": float(nll[b].mean()),
            "greedy_next": g64,
            "greedy_min_margin": round(margin, 6),
        })

    stream = ids.reshape(1, -1)
    wmean, wcount = windowed_nll(m64, stream, PPL_WINDOW)
    ref = {
        "description": (
            "Reference outputs of the Hugging Face class on this folder's model.safetensors, computed in float64 "
            "from the float32 weights (eager attention, no cache). sequences[b].logits[i] are the logits "
            "(vocab) after input_ids[0..t] for t = logits_positions[i]; nll[t] is -log softmax(logits[t])[input_ids[t+1]]; mean_nll "
            "averages them. greedy_next: argmax continuation of the whole sequence, recomputed without cache "
            "(float32 and float64 agree; greedy_min_margin is the smallest top-1/top-2 logit gap on the way). "
            "windowed: the sequences concatenated into one stream, cut into consecutive windows of `window` "
            "tokens (last partial window of >= 2 tokens counts), each from position 0, mean NLL over every "
            "predicted position. text: the ids after BOS as words of tokenizer.json. sliding_window_effect: "
            "largest logit change when the same weights attend to all positions instead (null: no window). "
            "rope_scaling_effect: the same for plain RoPE instead of the configured scaling."
        ),
        "model": spec["name"],
        "class": spec["cls"],
        "what": spec["what"],
        "seed": spec["seed"],
        "config_style": spec.get("config_style", "v5"),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": sys.version.split()[0],
        },
        "float32_max_abs_logit_deviation": f32_dev,
        "sliding_window_effect": window_effect,
        "rope_scaling_effect": scaling_effect,
        "sequences": seqs,
        "windowed": {
            "window": PPL_WINDOW,
            "input_ids": stream[0].tolist(),
            "predicted": wcount,
            "mean_nll": wmean,
        },
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{name}: {sum(t.numel() for t in tensors.values())} params, {size / 1024:.0f} KB, "
          f"float32 dev {f32_dev:.2e}, margins {[s['greedy_min_margin'] for s in seqs]}")


def papers_ppl(model, ids, window, batch=16):
    """Papers' protocol on one BOS-prefixed stream: consecutive windows of `window` tokens, each from position 0,
    last partial window of >= 2 tokens counts, mean NLL over every predicted position (float64)."""
    wins = [ids[s:s + window] for s in range(0, len(ids), window)]
    wins = [w for w in wins if len(w) >= 2]
    total, count = 0.0, 0
    full = [w for w in wins if len(w) == window]
    rest = [w for w in wins if len(w) != window]
    for group in [full[i:i + batch] for i in range(0, len(full), batch)] + [[w] for w in rest]:
        x = torch.tensor(group)
        nll = nll_of(forward_logits(model, x), x)
        total += float(nll.sum())
        count += nll.numel()
    return {"tokens": len(ids), "windows": len(wins), "predicted": count, "mean_nll": total / count,
            "ppl": math.exp(total / count)}


def brown_reference(model_dir, text_file, window=256):
    """tinylm-brown's dense perplexity with transformers in float64 (whole file, and its first 20,000 tokens)."""
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(text_file, encoding="utf-8") as f:
        text = f.read()
    ids = [BOS] + tok.encode(text, add_special_tokens=False).ids
    model = transformers.LlamaForCausalLM.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float64).eval()
    for label, stream in (("whole file", ids), ("first 20,000 tokens", ids[:20000])):
        r = papers_ppl(model, stream, window)
        print(f"tinylm-brown {os.path.basename(text_file)} {label} (BOS + text, windows of {window}): "
              f"{r['tokens']} tokens, {r['windows']} windows, {r['predicted']} predicted, "
              f"mean NLL {r['mean_nll']:.6f}, ppl {r['ppl']:.4f}")


def deno_fmt(paths):
    """Format the JSON files as the project's `deno fmt --check` expects (its JSON layout depends on line width)."""
    deno = os.path.join("node_modules", ".bin", "deno")
    if not os.path.exists(deno):
        print(f"warning: {deno} not found (run from the repository root): JSON left unformatted")
        return
    subprocess.run([deno, "fmt", "--quiet", *paths], check=True, env={**os.environ, "NO_COLOR": "1"})


def gguf_reference(gguf_path, ids_file, window=512):
    """A GGUF LLaMA through transformers' own GGUF loader (which undoes llama.cpp's q/k row permutation), float64:
    papers'-protocol perplexity of the token ids in ids_file (a JSON array or {"ids": [...]}, BOS first: tokenized elsewhere,
    since transformers cannot convert every GGUF tokenizer)."""
    model = transformers.LlamaForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(gguf_path)), gguf_file=os.path.basename(gguf_path),
        dtype=torch.float64, pad_token_id=None).eval()
    with open(ids_file) as f:
        ids = json.load(f)
    ids = ids["ids"] if isinstance(ids, dict) else ids  # a bare array, or {"ids": [...]}
    r = papers_ppl(model, ids, window)
    print(f"{os.path.basename(gguf_path)} (transformers GGUF loader, float64), windows of {window}: "
          f"{r['tokens']} tokens, {r['windows']} windows, {r['predicted']} predicted, "
          f"mean NLL {r['mean_nll']:.6f}, ppl {r['ppl']:.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join("test", "fixtures", "models"))
    ap.add_argument("--only", nargs="*", help="fixture names to build (default: all)")
    ap.add_argument("--brown", nargs=2, metavar=("MODEL_DIR", "TEXT"),
                    help="instead of building fixtures, print tinylm-brown's float64 perplexity on TEXT")
    ap.add_argument("--gguf", nargs=2, metavar=("GGUF", "IDS_JSON"),
                    help="instead of building fixtures, print a GGUF model's float64 perplexity on IDS_JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.brown:
        brown_reference(*args.brown)
        return
    if args.gguf:
        gguf_reference(*args.gguf)
        return
    for spec in FIXTURES:
        if not args.only or spec["name"] in args.only:
            build(spec, args.out)
            folder = os.path.join(args.out, spec["name"])
            deno_fmt([os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".json")])


if __name__ == "__main__":
    main()
