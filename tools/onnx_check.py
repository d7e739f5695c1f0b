#!/usr/bin/env python3
"""Cross-check of an exported ONNX folder with the official Python tools (not a test dependency).

Runs `onnx.checker.check_model` (full check, with strict shape inference) on `onnx/model.onnx`, then, when
Python onnxruntime is installed, one full pass and one cached step over a few token ids, checking that the
cached step's logits equal the full pass's last row (to 1e-4) and the present key/value shapes.

Usage: python3 tools/onnx_check.py EXPORTED_FOLDER [EXPORTED_FOLDER ...]
Skips (exit 0, with a message) when the `onnx` package is absent; install it from the local wheel mirror in a
venv: python3 -m venv /tmp/venv && /tmp/venv/bin/pip install onnx onnxruntime numpy
"""
import json
import os
import sys

try:
    import numpy as np
    import onnx
except ImportError as e:  # pragma: no cover
    print(f"skip: {e.name} is not installed (pip install onnx numpy from the local mirror)")
    sys.exit(0)


def check(folder: str) -> None:
    path = os.path.join(folder, "onnx", "model.onnx")
    config = json.load(open(os.path.join(folder, "config.json")))
    # the path form lets the checker follow external data (model.onnx_data) too
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path, load_external_data=False)
    ops = sorted({n.op_type for n in model.graph.node})
    print(f"{folder}: onnx.checker OK (ir {model.ir_version}, opset {model.opset_import[0].version}, "
          f"{len(model.graph.node)} nodes, ops {', '.join(ops)})")
    try:
        import onnxruntime as ort
    except ImportError:
        print("  onnxruntime not installed: run check skipped")
        return
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    # cache shapes from the graph: batch×kvHeads×past×headDim, or batch×1×past×rank for a latent cache
    past_shapes = {i.name: (i.shape[1], i.shape[3]) for i in s.get_inputs() if i.name.startswith("past_key_values")}
    ids = np.array([[1] + [(7 * i + 3) % config["vocab_size"] for i in range(11)]], dtype=np.int64)

    def feeds(part, past, cache):
        f = {
            "input_ids": part,
            "attention_mask": np.ones((1, past + part.shape[1]), dtype=np.int64),
            "position_ids": np.arange(past, past + part.shape[1], dtype=np.int64)[None],
        }
        for name, (heads, width) in past_shapes.items():
            f[name] = cache.get(name.replace("past_key_values", "present"), np.zeros((1, heads, 0, width), np.float32))
        return f

    names = [o.name for o in s.get_outputs()]
    full = dict(zip(names, s.run(None, feeds(ids, 0, {}))))
    n = ids.shape[1] - 1
    pre = dict(zip(names, s.run(None, feeds(ids[:, :n], 0, {}))))
    step = dict(zip(names, s.run(None, feeds(ids[:, n:], n, pre))))
    diff = float(np.abs(step["logits"][0, -1] - full["logits"][0, -1]).max())
    heads, width = past_shapes["past_key_values.0.key"]
    assert step["present.0.key"].shape == (1, heads, n + 1, width), step["present.0.key"].shape
    assert diff < 1e-4, f"cached step differs from the full pass by {diff}"
    per_token = sum(v.size for k, v in step.items() if k.startswith("present.")) * 4 // (n + 1)
    print(f"  onnxruntime {ort.__version__}: logits {full['logits'].shape}, cached step = full pass "
          f"(max |Δ| {diff:.2e}), KV cache {per_token} bytes per token")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    for f in sys.argv[1:]:
        check(f)
