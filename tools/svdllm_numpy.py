#!/usr/bin/python3
"""SVD-LLM (whitening, original activations) in plain numpy: a like-for-like speed yardstick.

The same steps as `cli.ts compress MODEL OUT --method svdllm --original-activations`: read the safetensors
file, embed the calibration windows, run each block forward in float32 (RMSNorm, q/k/v, RoPE "halves", causal
GQA attention, o, SwiGLU MLP) in batches of windows, accumulate the Gram matrix of each distinct linear input
(q/k/v share one, gate/up share one) as float32 products per batch added into float64, then per linear:
Cholesky of the mean Gram (diagonal shift on failure), SVD of W·L, A = U_k Σ_k^½, B = Σ_k^{−½} U_kᵀ W, and
write the factors (`<prefix>.svd_a` / `.svd_b`) with every other tensor into OUT/model.safetensors.
The last block's output is not computed (nothing reads it).

Usage: OPENBLAS_NUM_THREADS=1 /usr/bin/python3 tools/svdllm_numpy.py MODEL_DIR WINDOWS.i32 SAMPLES SEQLEN RATIO OUT_DIR
WINDOWS.i32: SAMPLES·SEQLEN little-endian int32 token ids (the calibration windows the TypeScript side cut,
so both sides see the same tokens; tokenising is not timed here). Prints one JSON line of phase timings.
Needs only numpy (Debian: python3-numpy). Carries no code of the reference implementations.
"""

import json
import os
import struct
import sys
import time

import numpy as np

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
GROUP = {"self_attn.q_proj": "attn", "self_attn.k_proj": "attn", "self_attn.v_proj": "attn",
         "self_attn.o_proj": "o", "mlp.gate_proj": "mlp", "mlp.up_proj": "mlp", "mlp.down_proj": "down"}
DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"svdllm_numpy: {name} is {info['dtype']}; only F32 models are handled")
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data, dtype=np.float32, count=(b - a) // 4, offset=a).reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, t in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for t in tensors.values():
            f.write(np.ascontiguousarray(t, dtype=np.float32).tobytes())


def rms_norm(x, w, eps):
    return (x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w).astype(np.float32)


def rope_tables(seq, hd, theta):
    inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(seq, dtype=np.float64)[:, None] * inv[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def rope(x, cos, sin):  # x: batch×heads×seq×hd, "halves" pairing (Hugging Face layout)
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def main():
    model_dir, win_path, samples, seqlen, ratio, out_dir = sys.argv[1:7]
    samples, seqlen, ratio = int(samples), int(seqlen), float(ratio)
    t = {"start": time.perf_counter()}
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    d, f_, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    H, KV = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or d // H
    eps, theta = cfg.get("rms_norm_eps", 1e-6), cfg.get("rope_theta", 10000.0)
    w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    ids = np.fromfile(win_path, dtype="<i4").reshape(samples, seqlen)
    t["load"] = time.perf_counter()

    x = w["model.embed_tokens.weight"][ids.reshape(-1)].astype(np.float32)  # tokens×d
    cos, sin = rope_tables(seqlen, hd, theta)
    mask = np.triu(np.full((seqlen, seqlen), -np.inf, dtype=np.float32), 1)
    batch = max(1, 1024 // seqlen)  # windows per batch, as ours
    out = {k: v for k, v in w.items() if not k.startswith("model.layers.")}
    forward = grams = factor = 0.0
    for i in range(L):
        p = f"model.layers.{i}."
        W = {n: w[p + n + ".weight"] for n in LINEARS}
        G = {"attn": np.zeros((d, d)), "o": np.zeros((H * hd, H * hd)), "mlp": np.zeros((d, d)),
             "down": np.zeros((f_, f_))}
        last = i == L - 1
        for s0 in range(0, samples, batch):
            nb = min(batch, samples - s0)
            r0, r1 = s0 * seqlen, (s0 + nb) * seqlen
            h = x[r0:r1]
            a0 = time.perf_counter()
            n1 = rms_norm(h, w[p + "input_layernorm.weight"], eps)
            a1 = time.perf_counter()
            G["attn"] += n1.T @ n1
            a2 = time.perf_counter()
            q = (n1 @ W["self_attn.q_proj"].T).reshape(nb, seqlen, H, hd).transpose(0, 2, 1, 3)
            k = (n1 @ W["self_attn.k_proj"].T).reshape(nb, seqlen, KV, hd).transpose(0, 2, 1, 3)
            v = (n1 @ W["self_attn.v_proj"].T).reshape(nb, seqlen, KV, hd).transpose(0, 2, 1, 3)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)
            s = q @ k.transpose(0, 1, 3, 2) * np.float32(1 / np.sqrt(hd)) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            att = (s @ v).transpose(0, 2, 1, 3).reshape(nb * seqlen, H * hd)
            a3 = time.perf_counter()
            G["o"] += att.T @ att
            a4 = time.perf_counter()
            mid = h + att @ W["self_attn.o_proj"].T
            n2 = rms_norm(mid, w[p + "post_attention_layernorm.weight"], eps)
            a5 = time.perf_counter()
            G["mlp"] += n2.T @ n2
            a6 = time.perf_counter()
            g = n2 @ W["mlp.gate_proj"].T
            act = (g / (1 + np.exp(-g))) * (n2 @ W["mlp.up_proj"].T)
            a7 = time.perf_counter()
            G["down"] += act.T @ act
            a8 = time.perf_counter()
            if not last:
                x[r0:r1] = mid + act @ W["mlp.down_proj"].T
            a9 = time.perf_counter()
            forward += (a1 - a0) + (a3 - a2) + (a5 - a4) + (a7 - a6) + (a9 - a8)
            grams += (a2 - a1) + (a4 - a3) + (a6 - a5) + (a8 - a7)
        b0 = time.perf_counter()
        T = samples * seqlen
        chol = {}
        for g_name, g in G.items():
            g /= T
            shift, scale = 0.0, np.mean(np.diag(g))
            while True:
                try:
                    chol[g_name] = np.linalg.cholesky(g + shift * np.eye(len(g)))
                    break
                except np.linalg.LinAlgError:
                    shift = max(shift * 10, 1e-10 * scale)
        for n in LINEARS:
            wt = W[n].astype(np.float64)
            m_, n_ = wt.shape
            rank = int(m_ * n_ * (1 - ratio) // (m_ + n_))
            u, sv, _ = np.linalg.svd(wt @ chol[GROUP[n]], full_matrices=False)
            uk, sk = u[:, :rank], sv[:rank]
            out[p + n + ".svd_a"] = (uk * np.sqrt(sk)).astype(np.float32)
            out[p + n + ".svd_b"] = ((uk.T @ wt) / np.sqrt(sk)[:, None]).astype(np.float32)
        for k_, v_ in w.items():
            if k_.startswith(p) and not any(k_.startswith(p + n + ".") for n in LINEARS):
                out[k_] = v_
        factor += time.perf_counter() - b0
    t["blocks"] = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), out)
    t["write"] = time.perf_counter()
    print(json.dumps({
        "load": t["load"] - t["start"], "forward": forward, "gram": grams, "factor": factor,
        "write": t["write"] - t["blocks"], "total": t["write"] - t["start"],
    }))


if __name__ == "__main__":
    main()
