/**
 * Bad-input corpus, Hugging Face folders: each case corrupts a copy of a small valid fixture and asserts that
 * loadModel refuses it with one line naming the file and the problem, before any allocation the bad sizes
 * would drive, without changing the input, and without hanging.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { loadModel } from "../../src/model/load.ts";
import { openModelWeights } from "../../src/io/sharded.ts";
import {
  assertRefused,
  editSafetensors,
  fixtureCopy,
  joinSafetensors,
  splitSafetensors,
  tempDir,
} from "./_corpus.ts";

const SHARDED = new URL("../fixtures/models/llama-sharded-tiny/", import.meta.url).pathname;
const canFifo = process.platform !== "win32";

/** Make a FIFO at `path` (the reader must refuse it, not block on it). */
function mkfifo(path: string): void {
  execFileSync("mkfifo", [path]);
}

/** A config.json edit refused naming config.json. */
const configCases: [string, (c: Record<string, unknown>) => void, RegExp][] = [
  [
    "num_hidden_layers 1e9",
    (c) => (c.num_hidden_layers = 1e9),
    /"num_hidden_layers" is 1000000000, above the limit/,
  ],
  [
    "num_hidden_layers -1",
    (c) => (c.num_hidden_layers = -1),
    /"num_hidden_layers" must be a positive integer/,
  ],
  [
    "num_hidden_layers 1.5",
    (c) => (c.num_hidden_layers = 1.5),
    /"num_hidden_layers" must be a positive integer/,
  ],
  ['num_hidden_layers "2"', (c) => (c.num_hidden_layers = "2"), /must be a positive integer, got "2"/],
  [
    "max_position_embeddings 2^31",
    (c) => (c.max_position_embeddings = 2 ** 31),
    /max_position_embeddings.*above/,
  ],
  [
    "max_position_embeddings 2^24",
    (c) => (c.max_position_embeddings = 2 ** 24),
    /max_position_embeddings.*above/,
  ],
  ["vocab_size 1e12", (c) => (c.vocab_size = 1e12), /"vocab_size" is 1000000000000, above the limit/],
  ["hidden_size 0", (c) => (c.hidden_size = 0), /"hidden_size" must be a positive integer, got 0/],
  [
    "intermediate_size 2^40",
    (c) => (c.intermediate_size = 2 ** 40),
    /"intermediate_size" .* above the limit/,
  ],
  [
    "num_attention_heads null",
    (c) => (c.num_attention_heads = null),
    /"num_attention_heads" must be a positive/,
  ],
  [
    "bos_token_id outside the vocabulary",
    (c) => (c.bos_token_id = 5000),
    /"bos_token_id" is 5000, outside the vocab/,
  ],
  [
    "eos_token_id outside the vocabulary",
    (c) => (c.eos_token_id = 101),
    /"eos_token_id" is 101, outside the vocab/,
  ],
  ["eos_token_id 1.5", (c) => (c.eos_token_id = 1.5), /"eos_token_id" must be an integer token id, got 1.5/],
];

for (const [name, edit, problem] of configCases) {
  test(`folder: config ${name} is refused naming config.json`, async () => {
    const { dir, cleanup } = await fixtureCopy();
    try {
      const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
      edit(cfg);
      await writeFile(join(dir, "config.json"), JSON.stringify(cfg));
      await assertRefused(() => loadModel(dir), join(dir, "config.json"), problem, dir);
    } finally {
      await cleanup();
    }
  });
}

/** Config sizes that contradict the tensors present, refused naming the weights file. */
const shapeCases: [string, (c: Record<string, unknown>) => void, RegExp][] = [
  [
    "num_hidden_layers 3 with 2 blocks",
    (c) => (c.num_hidden_layers = 3),
    /config says 3 blocks .* hold 2 \(model\.layers\.2 is missing\)/,
  ],
  ["num_hidden_layers 1000 with 2 blocks", (c) => (c.num_hidden_layers = 1000), /config says 1000 blocks/],
  [
    "num_hidden_layers 1 with 2 blocks",
    (c) => (c.num_hidden_layers = 1),
    /weights hold 2 blocks .* config says 1/,
  ],
  [
    "vocab_size above the embedding's rows",
    (c) => (c.vocab_size = 500),
    /embed_tokens\.weight has shape \[101, 64\] but the config says vocab_size 500/,
  ],
  ["hidden_size unlike the embedding's", (c) => (c.hidden_size = 128), /hidden_size 128/],
  [
    "intermediate_size unlike the MLP weights'",
    (c) => (c.intermediate_size = 4096),
    /model\.layers\.0\.mlp\.(gate|up|down)_proj\.weight has shape \[64, 64\] but the config \(hidden_size 64, intermediate_size 4096, .*\) says \[(4096, 64|64, 4096)\]/,
  ],
  [
    "num_key_value_heads unlike k_proj's rows",
    (c) => (c.num_key_value_heads = 4),
    /model\.layers\.0\.self_attn\.k_proj\.weight has shape \[32, 64\] .* says \[64, 64\]/,
  ],
];

for (const [name, edit, problem] of shapeCases) {
  test(`folder: ${name} is refused naming the weights`, async () => {
    const { dir, cleanup } = await fixtureCopy();
    try {
      const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
      edit(cfg);
      await writeFile(join(dir, "config.json"), JSON.stringify(cfg));
      await assertRefused(() => loadModel(dir), join(dir, "model.safetensors"), problem, dir);
    } finally {
      await cleanup();
    }
  });
}

/** Safetensors header edits, refused naming model.safetensors. */
const headerCases: [string, (h: Record<string, Record<string, unknown>>) => void, RegExp][] = [
  [
    "a U8 weight",
    (h) => Object.assign(h["model.norm.weight"], { dtype: "U8", shape: [256] }),
    /model\.norm\.weight has the integer dtype U8/,
  ],
  [
    "an I32 weight",
    (h) => (h["model.norm.weight"].dtype = "I32"),
    /model\.norm\.weight has the integer dtype I32/,
  ],
  [
    "an I64 weight",
    (h) => Object.assign(h["model.norm.weight"], { dtype: "I64", shape: [32] }),
    /integer dtype I64/,
  ],
  [
    "a negative dimension",
    (h) => (h["model.norm.weight"].shape = [-64]),
    /shape must be an array of non-negative integers, got \[-64\]/,
  ],
  [
    "a fractional dimension",
    (h) => (h["model.norm.weight"].shape = [63.5]),
    /non-negative integers, got \[63.5\]/,
  ],
  [
    "data_offsets past the end",
    (h) => (h["model.norm.weight"].data_offsets = [0, 1e9]),
    /outside the data section/,
  ],
  [
    "an unknown dtype",
    (h) => (h["model.norm.weight"].dtype = "F8_E4M3"),
    /unknown or unsupported dtype "F8_E4M3"/,
  ],
  [
    "lm_head of the wrong width",
    (h) => (h["lm_head.weight"].shape = [202, 32]),
    /lm_head\.weight has shape \[202, 32\] but the config says vocab_size 101 × hidden_size 64/,
  ],
  [
    "a final norm of the wrong shape",
    (h) => (h["model.norm.weight"].shape = [32, 2]),
    /model\.norm\.weight has shape \[32, 2\] but the config says hidden_size 64/,
  ],
  [
    "a block norm of the wrong length",
    (h) => Object.assign(h["model.layers.1.input_layernorm.weight"], { shape: [32], dtype: "F64" }),
    /model\.layers\.1\.input_layernorm\.weight has shape \[32\]/,
  ],
];

for (const [name, edit, problem] of headerCases) {
  test(`folder: safetensors with ${name} is refused naming the file`, async () => {
    const { dir, cleanup } = await fixtureCopy();
    try {
      const p = join(dir, "model.safetensors");
      await writeFile(p, editSafetensors(await readFile(p), edit));
      await assertRefused(() => loadModel(dir), p, problem, dir);
    } finally {
      await cleanup();
    }
  });
}

test("folder: a duplicate safetensors header key (JSON.parse keeps the last) is refused", async () => {
  const { dir, cleanup } = await fixtureCopy();
  try {
    const p = join(dir, "model.safetensors");
    const { header, data } = splitSafetensors(await readFile(p));
    const h = JSON.parse(header);
    const norm = JSON.stringify(h["model.norm.weight"]);
    const emb = h["model.embed_tokens.weight"].data_offsets;
    // the first copy points at other bytes: a reader keeping either one silently would read different weights
    const first = `"model.norm.weight":${
      JSON.stringify({ ...h["model.norm.weight"], data_offsets: [emb[0], emb[0] + 256] })
    },`;
    await writeFile(p, joinSafetensors(header.replace("{", "{" + first), data));
    assert.ok(norm.length > 0);
    await assertRefused(
      () => loadModel(dir),
      p,
      /tensor "model\.norm\.weight" appears twice in the header/,
      dir,
    );
  } finally {
    await cleanup();
  }
});

test("folder: a safetensors header length of 2^60 is refused before any allocation", async () => {
  const { dir, cleanup } = await fixtureCopy();
  try {
    const p = join(dir, "model.safetensors");
    const bytes = await readFile(p);
    new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(0, 2n ** 60n, true);
    await writeFile(p, bytes);
    await assertRefused(() => loadModel(dir), p, /exceeds the 100000000-byte cap/, dir);
  } finally {
    await cleanup();
  }
});

/** JSON files with syntax errors or the wrong shape: the message names the file. */
const jsonCases: [string, string, RegExp][] = [
  ["config.json", '{"model_type": "llama",', /config\.json: load model: config\.json: not valid JSON/],
  ["config.json", "[1, 2]", /config\.json must hold a JSON object, got an array/],
  ["tokenizer.json", "{not json", /tokenizer\.json: load tokenizer: tokenizer\.json: not valid JSON/],
  ["tokenizer_config.json", '"a string"', /tokenizer_config\.json must hold a JSON object, got string/],
];

for (const [file, text, problem] of jsonCases) {
  test(`folder: ${file} holding ${JSON.stringify(text)} is refused naming ${file}`, async () => {
    const { dir, cleanup } = await fixtureCopy();
    try {
      await writeFile(join(dir, file), text);
      await assertRefused(() => loadModel(dir), join(dir, file), problem, dir);
    } finally {
      await cleanup();
    }
  });
}

test("folder: a tokenizer_config.json bos_token the vocabulary lacks is refused (not 'no BOS')", async () => {
  const { dir, cleanup } = await fixtureCopy();
  try {
    await writeFile(join(dir, "tokenizer_config.json"), JSON.stringify({ bos_token: "<|begin|>" }));
    await assertRefused(
      () => loadModel(dir),
      join(dir, "tokenizer.json"),
      /tokenizer_config\.json bos_token "<\|begin\|>" is not a token of this vocabulary/,
      dir,
    );
  } finally {
    await cleanup();
  }
});

test("folder: no tokenizer at all is refused naming the folder", async () => {
  const { dir, cleanup } = await fixtureCopy();
  try {
    await rm(join(dir, "tokenizer.json"));
    await assertRefused(() => loadModel(dir), dir, /neither tokenizer\.json nor tokenizer_gguf\.json/, dir);
  } finally {
    await cleanup();
  }
});

/** A small byte-level BPE tokenizer.json over the fixture's 101 ids, with the given merges. */
function bpeTokenizer(merges: unknown[]): string {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2, a: 3, b: 4, c: 5, ab: 6 };
  for (let i = 7; i < 101; i++) vocab[`x${i}`] = i;
  return JSON.stringify({
    version: "1.0",
    added_tokens: ["<unk>", "<s>", "</s>"].map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: null,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  });
}

test("folder: a valid BPE tokenizer.json loads (control for the merge cases)", async () => {
  const { dir, cleanup } = await fixtureCopy();
  try {
    await writeFile(join(dir, "tokenizer.json"), bpeTokenizer(["a b", ["ab", "c"].join(" ")].slice(0, 1)));
    const m = await loadModel(dir);
    assert.deepEqual(Array.from(m.tokenizer.encode("ab")), [6]);
    await m.close();
  } finally {
    await cleanup();
  }
});

const mergeCases: [string, unknown[], RegExp][] = [
  ["three tokens", ["a b c"], /BPE merge 0 is "a b c": expected two tokens/],
  ["one token", ["a b", "ab"], /BPE merge 1 is "ab": expected two tokens/],
  [
    "a token not in the vocabulary",
    ["a zz"],
    /BPE merge 0 \("a zz"\) names the token "zz", which is not in the vocabulary/,
  ],
  ["a result not in the vocabulary", ["b c"], /makes the token "bc", which is not in the vocabulary/],
  ["a number", [42], /BPE merge 0 is 42: expected two tokens/],
];

for (const [name, merges, problem] of mergeCases) {
  test(`folder: a BPE merge of ${name} is refused naming tokenizer.json`, async () => {
    const { dir, cleanup } = await fixtureCopy();
    try {
      await writeFile(join(dir, "tokenizer.json"), bpeTokenizer(merges));
      await assertRefused(() => loadModel(dir), join(dir, "tokenizer.json"), problem, dir);
    } finally {
      await cleanup();
    }
  });
}

for (const file of ["config.json", "model.safetensors", "tokenizer.json"]) {
  test(`folder: a FIFO named ${file} is refused, not read forever`, { skip: !canFifo }, async () => {
    const { dir, cleanup } = await fixtureCopy();
    try {
      await rm(join(dir, file));
      mkfifo(join(dir, file));
      await assertRefused(() => loadModel(dir), join(dir, file), /not a regular file/);
    } finally {
      await cleanup();
    }
  });
}

test("folder: a folder named config.json is refused naming it", async () => {
  const { dir, cleanup } = await fixtureCopy();
  try {
    await rm(join(dir, "config.json"));
    await mkdir(join(dir, "config.json"));
    await assertRefused(() => loadModel(dir), join(dir, "config.json"), /it is a folder/);
  } finally {
    await cleanup();
  }
});

/** Shard names a hostile index may write: each would read outside the index's folder. */
const SHARD_NAMES = [
  "../model.safetensors",
  "%2e%2e/model-00001-of-00003.safetensors",
  "..%2fmodel-00001-of-00003.safetensors",
  "/etc/passwd",
  "sub\\..\\..\\model-00001-of-00003.safetensors",
  "C:\\Windows\\win.ini",
  "file:///etc/passwd",
  "http://127.0.0.1:9/x.safetensors",
  "//127.0.0.1:9/x.safetensors",
  "./../model-00001-of-00003.safetensors",
];

for (const shard of SHARD_NAMES) {
  test(`folder: a local index mapping a tensor to ${JSON.stringify(shard)} is refused`, async () => {
    const t = await tempDir();
    try {
      const dir = join(t.dir, "m");
      await mkdir(dir);
      for (
        const f of [
          "config.json",
          "tokenizer.json",
          "tokenizer_config.json",
          "model-00001-of-00003.safetensors",
          "model-00002-of-00003.safetensors",
          "model-00003-of-00003.safetensors",
        ]
      ) {
        await writeFile(join(dir, f), await readFile(join(SHARDED, f)));
      }
      const index = JSON.parse(await readFile(join(SHARDED, "model.safetensors.index.json"), "utf8"));
      index.weight_map["model.norm.weight"] = shard;
      await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify(index));
      await assertRefused(
        () => loadModel(dir),
        join(dir, "model.safetensors.index.json"),
        /weight_map\["model\.norm\.weight"\] = .* points outside the index's folder/,
        dir,
      );
    } finally {
      await t.cleanup();
    }
  });
}

test("folder: openModelWeights on a FIFO named .safetensors is refused", { skip: !canFifo }, async () => {
  const t = await tempDir();
  try {
    const p = join(t.dir, "w.safetensors");
    mkfifo(p);
    await assertRefused(() => openModelWeights(p), p, /not a regular file/);
  } finally {
    await t.cleanup();
  }
});
