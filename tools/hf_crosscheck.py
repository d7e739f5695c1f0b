#!/usr/bin/env python3
"""Cross-check our output folders against Hugging Face transformers (not a runtime or test dependency).

Loads, with transformers + torch, the dense tinylm-brown, its SVD-LLM 20 % compression (model_type svd_llama,
loaded through the modeling file written beside it with trust_remote_code=True) and its merge, computes
perplexity on brown-valid in the library's protocol (the text tokenized once with one BOS, consecutive windows
of the model's context, each evaluated alone, mean NLL over every predicted position), and prints ours
(`deno run -A cli.ts eval ...`) beside it; they must agree to 1e-4 relative. It then shows that the compressed
folder is refused without trust_remote_code, and checks a GGUF-sourced output (stories260K compressed): its
tokenizer.json through AutoTokenizer and the svd_llama model give our token count and perplexity.

Setup (local wheel mirror):
  python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch transformers safetensors tokenizers numpy
Run from the repository root:
  /tmp/hfvenv/bin/python tools/hf_crosscheck.py [--shared /work/shared] [--work /tmp/hf_crosscheck]
Folders missing under --work are made with our CLI (compress svdllm --ratio 0.2 with brown-calib.txt; merge).
  /tmp/hfvenv/bin/python tools/hf_crosscheck.py --only FOLDER TEXT WINDOW    (one folder of your own)
Exit status 1 when a perplexity differs by more than 1e-4 relative or the refusal does not happen.
"""
import argparse
import math
import os
import re
import subprocess
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DENO = os.path.join(REPO, "node_modules", ".bin", "deno")
TOL = 1e-4


def cli(*args):
    """Run our CLI; its stdout+stderr."""
    env = dict(os.environ, NO_COLOR="1")
    r = subprocess.run([DENO, "run", "-A", "cli.ts", *args], cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"cli.ts {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
    return r.stdout + r.stderr


def ours(folder, text, window):
    """Our perplexity: (tokens, mean NLL, ppl) parsed from `cli.ts eval`."""
    out = cli("eval", folder, "--text", text, "--window", str(window))
    m = re.search(r"(\d+) tokens in \d+ windows of \d+: mean NLL ([\d.]+), ppl ([\d.]+)", out)
    if not m:
        sys.exit(f"cannot parse cli.ts eval output:\n{out}")
    return int(m.group(1)), float(m.group(2)), float(m.group(3))


def theirs(folder, text, window, trust=False):
    """transformers' perplexity in our protocol: (tokens, mean NLL, ppl), float64 log-softmax."""
    # transformers 5 reads config.json (our auto_map) before tokenizer_config.json: trust it here too
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust, dtype=torch.float32).eval()
    with open(text, encoding="utf-8") as f:
        ids = [model.config.bos_token_id] + tok(f.read(), add_special_tokens=False)["input_ids"]
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids), window):
            w = ids[s:s + window]
            if len(w) < 2:
                break
            logits = model(torch.tensor([w])).logits[0].double()
            lp = torch.log_softmax(logits[:-1], dim=-1)
            nll -= lp.gather(1, torch.tensor(w[1:])[:, None]).sum().item()
            count += len(w) - 1
    return len(ids), nll / count, math.exp(nll / count), type(model).__name__


def compare(label, folder, text, window, trust=False):
    n1, nll1, p1 = ours(folder, text, window)
    n2, nll2, p2, cls = theirs(folder, text, window, trust)
    rel = abs(p1 - p2) / p1
    ok = n1 == n2 and rel <= TOL
    print(f"{label:<28} {cls:<22} tokens {n1}/{n2}  ours ppl {p1:.4f} (NLL {nll1:.6f})  "
          f"transformers ppl {p2:.4f} (NLL {nll2:.6f})  rel {rel:.1e}  {'OK' if ok else 'MISMATCH'}")
    return ok


def refused(folder):
    """AutoModelForCausalLM without trust_remote_code: the error transformers raises, or None if it loaded."""
    try:
        AutoModelForCausalLM.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001 — any loud refusal counts; report its type and first line
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default="/work/shared")
    ap.add_argument("--work", default="/tmp/hf_crosscheck")
    ap.add_argument("--only", nargs=3, metavar=("FOLDER", "TEXT", "WINDOW"),
                    help="compare just this folder (trust_remote_code=True) on TEXT in WINDOW-token windows")
    a = ap.parse_args()
    if a.only:
        print(f"transformers {transformers.__version__}, torch {torch.__version__}")
        ok = compare(os.path.basename(a.only[0].rstrip("/")), a.only[0], a.only[1], int(a.only[2]), trust=True)
        sys.exit(0 if ok else 1)
    brown = os.path.join(a.shared, "models", "tinylm-brown")
    valid = os.path.join(a.shared, "data", "brown-valid.txt")
    calib = os.path.join(a.shared, "data", "brown-calib.txt")
    comp, merged = os.path.join(a.work, "brown-svdllm20"), os.path.join(a.work, "brown-svdllm20-merged")
    stories = os.path.join(a.work, "stories-svd30")
    os.makedirs(a.work, exist_ok=True)
    if not os.path.exists(comp):
        cli("compress", brown, comp, "--method", "svdllm", "--ratio", "0.2", "--calib", calib)
    if not os.path.exists(merged):
        cli("merge", comp, merged)
    if not os.path.exists(stories):
        cli("compress", "models/stories260K/stories260K.gguf", stories, "--method", "svd", "--ratio", "0.3")
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    ok = compare("tinylm-brown dense", brown, valid, 512)
    ok &= compare("tinylm-brown svdllm 20 %", comp, valid, 512, trust=True)
    ok &= compare("tinylm-brown merged", merged, valid, 512)
    why = refused(comp)
    print(f"compressed, no trust_remote_code: {'refused: ' + why if why else 'LOADED (not refused)'}")
    ok &= why is not None
    ok &= compare("stories260K svd 30 % (GGUF)", stories, os.path.join(REPO, "data", "tinystories-valid.part1.txt"),
                  512, trust=True)
    print("all equal to 1e-4" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
