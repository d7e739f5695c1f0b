// The Hugging Face fixtures (test/fixtures/models) that the export tests run over. They cover what the two
// real models do not: tied embeddings (lm_head = the embedding's transpose), q/k/v biases (qwen2), a sliding
// window shorter than the input (mistral-swa), linear and llama3 RoPE scaling, sharded weights.

/** The fixtures' folder. */
export const FIXTURES = new URL("../fixtures/models/", import.meta.url).pathname;

/** The fixture names, one folder each under {@link FIXTURES}. */
export const HF_FIXTURES: readonly string[] = [
  "llama-gqa-tiny",
  "llama-linear-rope-tiny",
  "llama-sharded-tiny",
  "llama-tied-tiny",
  "llama3-rope-tiny",
  "mistral-swa-tiny",
  "mistral-tiny",
  "qwen2-tiny",
];
