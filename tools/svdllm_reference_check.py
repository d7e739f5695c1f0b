#!/usr/bin/env python3
"""Run the official SVD-LLM or ASVD code on a small Hugging Face LLaMA folder, on CPU, with the calibration and
evaluation windows exported by tools/quality_probe.ts, so that its perplexity can be compared with ours in
exactly the same protocol. The official checkouts (github AIoT-MLSys-Lab/SVD-LLM, hahnyuan/ASVD4LLM) are kept
OUTSIDE this repository and passed with --reference; nothing of theirs is copied here.

What runs verbatim from the references:
  - SVD-LLM: `profle_svdllm` (Gram sums of every linear's inputs on the ORIGINAL model, Cholesky in float64
    with its eigvalsh shift), `whitening` (float32 SVD of W·L, truncation, factors), or with --update
    `whitening_local_update` + `local_update` (float32 lstsq refit of U on the compressed prefix's
    activations against the dense layer's outputs, on the first --update-samples windows).
  - ASVD (uniform ratio): `calib_input_distribution` (abs_mean of every linear's inputs on the original
    model) and `SVDLinear.from_linear(act_aware, alpha)`, which uses torch.svd_lowrank (--exact swaps in an
    exact truncated SVD; --plain turns act_aware off: the reference's plain SVD).
Only the glue is ours, because SVD-LLM targets an old transformers on CUDA:
  - `datasets` is stubbed (imported at module level, unused: calibration comes from --windows);
  - SVD-LLM's SVD attention/MLP classes are replaced by transformers' own LlamaAttention/LlamaMLP whose
    projections are low-rank pairs exposing the reference's attribute names (q_u_proj, q_v_proj, ...): the
    reference fills those and the model still runs (its own attention crashes on GQA, see methods.md);
  - `Tensor.cuda` is the identity (local_update hard-codes .cuda()), and for --update the decoder layer is
    given the rotary embeddings it no longer computes itself and returns the old (hidden,) tuple.

Outputs: a folder with `<prefix>.svd_a` / `<prefix>.svd_b` factor pairs that our evaluator reads
(tools/quality_probe.ts '{"model":"brown","evalOnly":OUT}'), and the perplexity computed here in torch on the
same evaluation windows (printed as JSON). Needs a venv with torch, transformers, safetensors, numpy.

Usage (the windows file comes from tools/quality_probe.ts {"model":"brown","samples":64,"dumpWindows":FILE}):
  python tools/svdllm_reference_check.py --reference /tmp/q/SVD-LLM --model ../shared/models/tinylm-brown \
      --windows /tmp/q/brown-win-64.json --ratio 0.6 --out /tmp/q/ref-0.6 [--update --update-samples 64]
  python tools/svdllm_reference_check.py --method asvd --reference /tmp/q/ASVD4LLM ... [--exact] [--plain]
"""
import argparse
import json
import math
import os
import shutil
import sys
import time
import types

import torch
import torch.nn as nn


class LowRank(nn.Module):
    """y = u(v(x)): a factored projection that transformers' attention/MLP call as if it were dense."""

    def __init__(self, u, v):
        super().__init__()
        self.u, self.v = u, v

    def forward(self, x):
        return self.u(self.v(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True,
                    help="checkout (outside this repo) of AIoT-MLSys-Lab/SVD-LLM, or of hahnyuan/ASVD4LLM for asvd")
    ap.add_argument("--method", choices=["svdllm", "asvd"], default="svdllm")
    ap.add_argument("--model", required=True)
    ap.add_argument("--windows", required=True, help="JSON {calib: [[ids]], eval: [ids], window} from quality_probe")
    ap.add_argument("--ratio", type=float, required=True, help="fraction of parameters removed (SVD-LLM's r)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--update", action="store_true", help="svdllm: whitening_local_update instead of whitening")
    ap.add_argument("--sequential", action="store_true",
                    help="svdllm: whiten block i on the outputs of the already-compressed blocks 0..i-1 (ours)")
    ap.add_argument("--update-samples", type=int, default=16, help="svdllm: windows for the update (reference: 16)")
    ap.add_argument("--alpha", type=float, default=0.5, help="asvd: exponent of the activation scale")
    ap.add_argument("--plain", action="store_true", help="asvd: act_aware off (the reference's plain SVD)")
    ap.add_argument("--exact", action="store_true", help="asvd: exact SVD instead of torch.svd_lowrank")
    ap.add_argument("--calib-text", help="cut the calibration windows from this text the way SVD-LLM's "
                    "get_calib_train_data does (random character offsets, seed --calib-seed, <s> first) instead of "
                    "using the windows file's; the peers' figures of methods.md were made so")
    ap.add_argument("--calib-seed", type=int, default=3)
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, args.reference)
    from transformers import LlamaForCausalLM

    data = json.load(open(args.windows))
    if args.calib_text:
        data["calib"] = reference_windows(args, len(data["calib"][0]))
    calib = [torch.tensor([w], dtype=torch.long) for w in data["calib"]]
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    model.config.use_cache = False  # the low-rank attentions all carry layer_idx 0: no shared KV cache
    model.seqlen = len(data["calib"][0])
    kept = 1 - args.ratio  # both references take the fraction kept
    linears = {f"model.layers.{i}.{part}.{p}_proj": (i, part, p)
               for i in range(model.config.num_hidden_layers)
               for part, ps in (("self_attn", "qkvo"), ("mlp", ["gate", "up", "down"])) for p in ps}
    base = {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.removesuffix(".weight") not in linears}
    loader = [{"input_ids": c, "attention_mask": torch.ones_like(c)} for c in calib]

    t0, w0 = time.process_time(), time.perf_counter()
    if args.method == "asvd":
        run_asvd(args, model, loader, kept, linears)
    else:
        run_svdllm(args, model, calib, loader, kept)
    seconds, cpu = time.perf_counter() - w0, time.process_time() - t0

    # Export the factors under our names.
    os.makedirs(args.out, exist_ok=True)
    from safetensors.torch import save_file
    tensors = dict(base)
    for pre, (i, part, p) in linears.items():
        mod = getattr(getattr(model.model.layers[i], part), f"{p}_proj")
        a, b = (mod.u.weight, mod.v.weight) if isinstance(mod, LowRank) else (mod.ALinear.weight, mod.BLinear.weight)
        tensors[f"{pre}.svd_a"] = a.detach().float().contiguous()
        tensors[f"{pre}.svd_b"] = b.detach().float().contiguous()
    save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(args.model, f)):
            shutil.copy(os.path.join(args.model, f), os.path.join(args.out, f))

    # Perplexity in torch on the same windows (each window predicts its own tokens 1..n-1).
    ids, n = data["eval"], data["window"]
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids), n):
            w = ids[s:s + n]
            if len(w) < 2:
                break
            x = torch.tensor([w], dtype=torch.long)
            logits = model(x, use_cache=False).logits[0, :-1].double()
            nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            count += len(w) - 1
    print(json.dumps({"method": args.method, "ratio": args.ratio, "calib": len(calib), "sequential": args.sequential,
                      "update_samples": args.update_samples if args.update else None,
                      "alpha": args.alpha if args.method == "asvd" else None, "plain": args.plain,
                      "exact": args.exact, "torch_ppl": math.exp(nll / count), "tokens": count,
                      "compress_wall_s": round(seconds, 2), "compress_cpu_s": round(cpu, 2), "out": args.out}))


def reference_windows(args, seqlen):
    """Windows as SVD-LLM's get_calib_train_data cuts them (re-stated, not copied): for each sample a random
    character offset i (Python's random, seeded), text[i : i + 10·seqlen] tokenized with the model's
    tokenizer (which puts <s> first), its first seqlen tokens; too-short pieces are skipped."""
    import random
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    text = open(args.calib_text, encoding="utf8").read()
    random.seed(args.calib_seed)
    wins = []
    for _ in range(args.calib_samples + 1):
        i = random.randint(0, len(text) - seqlen - 1)
        ids = tok.encode(text[i:i + seqlen * 10]).ids
        if len(ids) >= seqlen:
            wins.append(ids[:seqlen])
    return wins[: args.calib_samples]


def run_asvd(args, model, loader, kept, linears):
    """The official ASVD path at one uniform parameter ratio."""
    from act_aware_utils import calib_input_distribution
    from modules.svd_linear import SVDLinear
    torch.manual_seed(0)  # svd_lowrank is randomized
    if args.exact:
        def exact(w, q):
            u, s, vt = torch.linalg.svd(w.double(), full_matrices=False)
            return u[:, :q].float(), s[:q].float(), vt[:q].T.float()
        torch.svd_lowrank = exact
    os.makedirs("cache", exist_ok=True)  # the reference saves its statistics there (relative to the cwd)
    if not args.plain:
        calib_input_distribution(model, loader, "abs_mean", use_cache=False)
    with torch.no_grad():
        for pre, (i, part, p) in linears.items():
            parent = getattr(model.model.layers[i], part)
            lin = getattr(parent, f"{p}_proj")
            setattr(parent, f"{p}_proj", SVDLinear.from_linear(lin, param_ratio=kept, act_aware=not args.plain,
                                                               alpha=args.alpha, sigma_fuse="UV"))


def run_svdllm(args, model, calib, loader, kept):
    """The official SVD-LLM path: profle_svdllm, then whitening or whitening_local_update."""
    sys.modules["datasets"] = types.SimpleNamespace(load_dataset=None)  # imported at module level, unused
    import SVDLLM as ref  # the official module
    from transformers.models.llama import modeling_llama as ml
    torch.Tensor.cuda = lambda self, *a, **k: self  # local_update hard-codes .cuda()
    config = model.config

    def pairs(mod, names):
        for p in names:
            u, v = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
            setattr(mod, f"{p}_u_proj", u)
            setattr(mod, f"{p}_v_proj", v)
            setattr(mod, f"{p}_proj", LowRank(u, v))
        return mod

    ref.SVD_LlamaAttention = lambda config, ratio: pairs(ml.LlamaAttention(config, layer_idx=0), "qkvo")
    ref.SVD_LlamaMLP = lambda hidden_size, intermediate_size, hidden_act, ratio: pairs(
        ml.LlamaMLP(config), ["gate", "up", "down"])
    if args.sequential:
        # Not in the reference: our sequential calibration, built from its functions only. Block by block,
        # profile the whole model (blocks < i already low-rank) and whiten block i alone with its profile.
        find = ref.find_layers

        def unique_layers(module, **kw):  # a low-rank pair is reachable under two names: profile it once
            seen, out = set(), {}
            for name, mod in find(module, **kw).items():
                if id(mod) not in seen:
                    seen.add(id(mod))
                    out[name] = mod
            return out

        ref.find_layers = unique_layers
        layers = model.model.layers
        for i in range(len(layers)):
            prof = ref.profle_svdllm("llama", model, loader, "cpu")
            shim = types.SimpleNamespace(model=types.SimpleNamespace(layers=[layers[i]]), config=config,
                                         eval=lambda: None)
            ref.whitening("llama", shim, {0: prof[i]}, kept, "cpu")
        ref.find_layers = find
        return
    profiling = ref.profle_svdllm("llama", model, loader, "cpu")
    if not args.update:
        ref.whitening("llama", model, profiling, kept, "cpu")
        return
    rotary = model.model.rotary_emb
    orig_forward = ml.LlamaDecoderLayer.forward

    def compat(self, hidden_states, attention_mask=None, position_ids=None, position_embeddings=None, **kw):
        if position_embeddings is None:
            position_embeddings = rotary(hidden_states, position_ids=position_ids)
        return (orig_forward(self, hidden_states, attention_mask=attention_mask, position_ids=position_ids,
                             position_embeddings=position_embeddings, **kw),)

    ml.LlamaDecoderLayer.forward = compat
    try:
        ref.whitening_local_update("llama", model, [(c, c) for c in calib[: args.update_samples]], profiling,
                                   kept, "cpu")
    finally:
        ml.LlamaDecoderLayer.forward = orig_forward


if __name__ == "__main__":
    main()
