/**
 * The typed model spec: everything the forward pass needs to know about a LLaMA-family model, built from a
 * Hugging Face `config.json` ({@link specFromHfConfig}) or GGUF metadata ({@link specFromGguf}).
 *
 * @module
 */
import { FormatError, OptionError } from "../errors.ts";
import type { GgufValue } from "../io/gguf.ts";
import type { RopeScaling } from "./rope.ts";

/** A LLaMA-architecture decoder (also Mistral and Qwen2, which differ only in the fields below). */
export interface LlamaSpec {
  /** Always "llama": the block structure every supported model shares. */
  readonly architecture: "llama";
  /** Model width d (embedding and residual stream). */
  readonly hiddenSize: number;
  /** SwiGLU width f (gate/up: f×d, down: d×f). */
  readonly intermediateSize: number;
  /** Number of decoder blocks. */
  readonly numLayers: number;
  /** Query heads. */
  readonly numHeads: number;
  /** Key/value heads (GQA when fewer than numHeads; divides numHeads). */
  readonly numKvHeads: number;
  /** Width of one head (q: numHeads·headDim, k/v: numKvHeads·headDim). */
  readonly headDim: number;
  /** Vocabulary size (embedding rows, logits). */
  readonly vocabSize: number;
  /** RMSNorm epsilon. */
  readonly rmsNormEps: number;
  /** RoPE base θ. */
  readonly ropeTheta: number;
  /**
   * How RoPE pairs the dimensions of a head: "halves" rotates (x[i], x[i + headDim/2]) (Hugging Face
   * `rotate_half`); "interleaved" rotates (x[2i], x[2i+1]) (Meta's original and llama.cpp, whose GGUF files store
   * q/k rows permuted to suit it).
   */
  readonly ropeStyle: "halves" | "interleaved";
  /** RoPE frequency rescaling (Hugging Face `rope_scaling` "linear" or "llama3"); absent: none. */
  readonly ropeScaling?: RopeScaling;
  /** Longest context the model was trained for. */
  readonly maxPositions: number;
  /** Each query attends only to the last `slidingWindow` positions, itself included (Mistral); absent: all. */
  readonly slidingWindow?: number;
  /** lm_head shares the embedding matrix. */
  readonly tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (Qwen2). */
  readonly attentionBias: boolean;
  /** Beginning-of-sequence token id (-1 if none). */
  readonly bosTokenId: number;
  /** End-of-sequence token id (-1 if none). */
  readonly eosTokenId: number;
}

/** model_type values {@link specFromHfConfig} accepts. */
export const SUPPORTED_MODEL_TYPES = ["llama", "mistral", "qwen2"] as const;

/**
 * Upper limits of config sizes, far above any real model (the largest have ~130 blocks, width 16 384, 256K
 * tokens, 10M positions): a few bytes of config above them are refused before they size any loop or table.
 */
export const SPEC_LIMITS: Readonly<Record<string, number>> = Object.freeze({
  layers: 4096,
  width: 1 << 20,
  heads: 1 << 14,
  vocab: 1 << 24,
  positions: (1 << 24) - 1,
});

function positiveInt(where: string, field: string, v: unknown, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new FormatError(where, `field "${field}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  if (v > max) {
    throw new FormatError(where, `field "${field}" is ${v}, above the limit of ${max} (a corrupt config?)`);
  }
  return v;
}

function positiveNumber(where: string, field: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new FormatError(where, `field "${field}" must be a positive number, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A special token id: absent, null or negative means none; anything else must be an integer id. */
function tokenId(where: string, field: string, v: unknown): number {
  if (Array.isArray(v)) v = v[0]; // some configs list several eos ids; the first is the canonical one
  if (v === undefined || v === null || (typeof v === "number" && v < 0)) return -1;
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw new FormatError(where, `field "${field}" must be an integer token id, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Throw unless the BOS/EOS ids (when set) lie inside the vocabulary: an id outside it is not "no BOS". */
function checkTokenIds(where: string, s: LlamaSpec, names: [string, string]): void {
  for (const [field, id] of [[names[0], s.bosTokenId], [names[1], s.eosTokenId]] as const) {
    if (id >= s.vocabSize) {
      throw new FormatError(
        where,
        `field "${field}" is ${id}, outside the vocabulary (vocab size ${s.vocabSize})`,
      );
    }
  }
}

function checkHeads(where: string, s: LlamaSpec, idNames: [string, string]): LlamaSpec {
  checkTokenIds(where, s, idNames);
  if (s.numHeads % s.numKvHeads !== 0) {
    throw new FormatError(
      where,
      `num_attention_heads ${s.numHeads} is not a multiple of num_key_value_heads ${s.numKvHeads}`,
    );
  }
  if (s.headDim % 2 !== 0) throw new FormatError(where, `head_dim ${s.headDim} must be even for RoPE`);
  return Object.freeze(s);
}

/** Hugging Face `rope_scaling` → {@link RopeScaling}; "default"/null → undefined; other types refused. */
function parseRopeScaling(scaling: unknown, where: string): RopeScaling | undefined {
  if (scaling === undefined || scaling === null) return undefined;
  const s = scaling as Record<string, unknown>;
  const type = s.rope_type ?? s.type;
  if (type === "default") return undefined;
  const num = (field: string) => positiveNumber(where, `rope_scaling.${field}`, s[field]);
  if (type === "linear") return { type: "linear", factor: num("factor") };
  if (type === "llama3") {
    const r: RopeScaling = {
      type: "llama3",
      factor: num("factor"),
      lowFreqFactor: num("low_freq_factor"),
      highFreqFactor: num("high_freq_factor"),
      originalMaxPositions: num("original_max_position_embeddings"),
    };
    if (r.highFreqFactor <= r.lowFreqFactor) {
      throw new FormatError(where, `rope_scaling: high_freq_factor must exceed low_freq_factor`);
    }
    return r;
  }
  throw new OptionError(
    `${where}: rope_scaling ${JSON.stringify(scaling)} is not supported (supported: "linear", "llama3")`,
  );
}

/**
 * Build a {@link LlamaSpec} from a parsed Hugging Face `config.json` (model_type llama, mistral or qwen2).
 * Throws an {@link OptionError} for another model_type, a {@link FormatError} naming the field for a missing or
 * invalid one, and refuses features the forward pass does not implement (rope_scaling other than "linear" and
 * "llama3", MLP biases, Qwen2's per-layer sliding windows) rather than computing something else silently.
 *
 * @param config the parsed config.json
 * @param where file name for messages
 */
export function specFromHfConfig(config: Record<string, unknown>, where = "config.json"): LlamaSpec {
  // a compressed folder's "svd_llama" (src/model/hf_config.ts) is llama with factored linears
  const type = typeof config.model_type === "string"
    ? config.model_type.replace(/^svd_(?=llama$|mistral$|qwen2$)/, "")
    : config.model_type;
  if (typeof type !== "string" || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(type)) {
    throw new OptionError(
      `${where}: model_type ${JSON.stringify(type)} is not supported (supported: ${
        SUPPORTED_MODEL_TYPES.join(", ")
      })`,
    );
  }
  if (config.hidden_act !== undefined && config.hidden_act !== "silu") {
    throw new OptionError(
      `${where}: hidden_act ${JSON.stringify(config.hidden_act)} is not supported (only "silu")`,
    );
  }
  // transformers 5 moved rope_theta and the scaling fields into rope_parameters
  const ropeScaling = parseRopeScaling(config.rope_scaling ?? config.rope_parameters, where);
  if (config.mlp_bias === true) throw new OptionError(`${where}: mlp_bias true is not supported`);
  // Mistral attends to a sliding window of the last `sliding_window` positions when the field is set; Qwen2
  // only with use_sliding_window, and then per layer (max_window_layers), which is not implemented.
  if (type === "qwen2" && config.use_sliding_window === true) {
    throw new OptionError(`${where}: Qwen2 sliding-window attention (use_sliding_window) is not supported`);
  }
  const slides = type === "mistral" && config.use_sliding_window !== false; // LLaMA ignores the field
  const slide = slides && typeof config.sliding_window === "number"
    ? positiveInt(where, "sliding_window", config.sliding_window)
    : undefined;
  const L = SPEC_LIMITS;
  const hidden = positiveInt(where, "hidden_size", config.hidden_size, L.width);
  const heads = positiveInt(where, "num_attention_heads", config.num_attention_heads, L.heads);
  const kvHeads = config.num_key_value_heads === undefined || config.num_key_value_heads === null
    ? heads
    : positiveInt(where, "num_key_value_heads", config.num_key_value_heads, L.heads);
  const headDim = config.head_dim === undefined || config.head_dim === null
    ? hidden / heads
    : positiveInt(where, "head_dim", config.head_dim, L.width);
  if (!Number.isInteger(headDim)) {
    throw new FormatError(
      where,
      `hidden_size ${hidden} is not a multiple of num_attention_heads ${heads} (and no head_dim)`,
    );
  }
  const ropeTheta = config.rope_theta ??
    (config.rope_parameters as Record<string, unknown> | undefined)?.rope_theta ??
    10000;
  return checkHeads(where, {
    architecture: "llama",
    hiddenSize: hidden,
    intermediateSize: positiveInt(where, "intermediate_size", config.intermediate_size, L.width),
    numLayers: positiveInt(where, "num_hidden_layers", config.num_hidden_layers, L.layers),
    numHeads: heads,
    numKvHeads: kvHeads,
    headDim,
    vocabSize: positiveInt(where, "vocab_size", config.vocab_size, L.vocab),
    rmsNormEps: positiveNumber(where, "rms_norm_eps", config.rms_norm_eps ?? 1e-6),
    ropeTheta: positiveNumber(where, "rope_theta", ropeTheta),
    ropeStyle: "halves",
    ...(ropeScaling ? { ropeScaling } : {}),
    maxPositions: positiveInt(
      where,
      "max_position_embeddings",
      config.max_position_embeddings ?? 2048,
      L.positions,
    ),
    ...(slide !== undefined ? { slidingWindow: slide } : {}),
    tieWordEmbeddings: config.tie_word_embeddings === true,
    attentionBias: type === "qwen2" ? config.attention_bias !== false : config.attention_bias === true,
    bosTokenId: tokenId(where, "bos_token_id", config.bos_token_id),
    eosTokenId: tokenId(where, "eos_token_id", config.eos_token_id),
  }, ["bos_token_id", "eos_token_id"]);
}

/** GGUF `<arch>.rope.scaling.*` → {@link RopeScaling}: "linear" is read, "none" ignored, others refused. */
function ggufRopeScaling(
  kv: ReadonlyMap<string, GgufValue>,
  where: string,
  arch: string,
): { ropeScaling?: RopeScaling } {
  const type = kv.get(`${arch}.rope.scaling.type`);
  const factor = kv.get(`${arch}.rope.scaling.factor`);
  if (type === undefined || type === "none" || (type === "linear" && factor === 1)) return {};
  if (type === "linear") {
    return {
      ropeScaling: { type: "linear", factor: positiveNumber(where, `${arch}.rope.scaling.factor`, factor) },
    };
  }
  throw new OptionError(`${where}: GGUF ${arch}.rope.scaling.type ${JSON.stringify(type)} is not supported`);
}

/**
 * Build a {@link LlamaSpec} from GGUF metadata (general.architecture "llama" or "qwen2"; keys `<arch>.*`).
 * llama.cpp's converter stores LLaMA's q/k rows permuted for interleaved-pairs RoPE, so a "llama" spec says
 * "interleaved"; Qwen2 keeps the Hugging Face layout ("halves") and has q/k/v biases. Missing optional keys take
 * llama.cpp's defaults (rope.freq_base 10000, head_count_kv = head_count); the vocabulary size comes from
 * `<arch>.vocab_size`, else the token list, else `token_embd.weight`'s rows.
 *
 * @param kv GGUF metadata
 * @param where file name for messages
 * @param embedRows rows of token_embd.weight, if known (vocabulary size fallback)
 */
export function specFromGguf(
  kv: ReadonlyMap<string, GgufValue>,
  where = "model.gguf",
  embedRows?: number,
): LlamaSpec {
  const arch = kv.get("general.architecture");
  if (arch !== "llama" && arch !== "qwen2") {
    throw new OptionError(
      `${where}: GGUF general.architecture ${
        JSON.stringify(arch)
      } is not supported (supported: "llama", "qwen2")`,
    );
  }
  const a = arch; // metadata keys are prefixed by the architecture
  const num = (key: string, fallback?: number): number => {
    const v = kv.get(key) ?? fallback;
    if (typeof v !== "number") {
      throw new FormatError(where, `GGUF metadata "${key}" is missing or not a number`);
    }
    return v;
  };
  const L = SPEC_LIMITS;
  const hidden = positiveInt(where, `${a}.embedding_length`, num(`${a}.embedding_length`), L.width);
  const heads = positiveInt(where, `${a}.attention.head_count`, num(`${a}.attention.head_count`), L.heads);
  const kvHeads = positiveInt(
    where,
    `${a}.attention.head_count_kv`,
    num(`${a}.attention.head_count_kv`, heads),
    L.heads,
  );
  const headDim = positiveInt(
    where,
    `${a}.attention.key_length`,
    num(`${a}.attention.key_length`, hidden / heads),
    L.width,
  );
  const ropeDims = num(`${a}.rope.dimension_count`, headDim);
  if (ropeDims !== headDim) {
    throw new OptionError(
      `${where}: partial RoPE (rope.dimension_count ${ropeDims} < head dim ${headDim}) is not supported`,
    );
  }
  const tokens = kv.get("tokenizer.ggml.tokens");
  const vocab = kv.get(`${a}.vocab_size`) ?? (Array.isArray(tokens) ? tokens.length : embedRows);
  const id = (key: string): number => {
    const v = kv.get(key);
    return typeof v === "number" && v >= 0 && v < 0xffffffff ? v : -1; // u32 −1 is llama.cpp's "none"
  };
  return checkHeads(where, {
    architecture: "llama",
    hiddenSize: hidden,
    intermediateSize: positiveInt(
      where,
      `${a}.feed_forward_length`,
      num(`${a}.feed_forward_length`),
      L.width,
    ),
    numLayers: positiveInt(where, `${a}.block_count`, num(`${a}.block_count`), L.layers),
    numHeads: heads,
    numKvHeads: kvHeads,
    headDim,
    vocabSize: positiveInt(where, `${a}.vocab_size`, vocab, L.vocab),
    rmsNormEps: positiveNumber(
      where,
      `${a}.attention.layer_norm_rms_epsilon`,
      num(`${a}.attention.layer_norm_rms_epsilon`, 1e-5),
    ),
    ropeTheta: positiveNumber(where, `${a}.rope.freq_base`, num(`${a}.rope.freq_base`, 10000)),
    // llama.cpp permutes LLaMA's q/k rows for its interleaved RoPE; Qwen2 keeps Hugging Face's layout (NEOX)
    ropeStyle: arch === "llama" ? "interleaved" : "halves",
    ...ggufRopeScaling(kv, where, a),
    maxPositions: positiveInt(where, `${a}.context_length`, num(`${a}.context_length`, 2048), L.positions),
    tieWordEmbeddings: false, // decided by the loader from whether output.weight exists
    attentionBias: arch === "qwen2",
    bosTokenId: id("tokenizer.ggml.bos_token_id"),
    eosTokenId: id("tokenizer.ggml.eos_token_id"),
  }, ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"]);
}
