/**
 * The calibration inputs of a `compress` run: the token windows cut from the text or ids, and their embedded
 * streams, taken from the one read of the embedding table that is also its copy to the output.
 *
 * @module
 */
import { OptionError } from "../errors.ts";
import { calibrationWindows } from "../calib/windows.ts";
import type { TensorReader } from "../io/tensor_reader.ts";
import { EMBED } from "../model/names.ts";
import type { LlamaSpec } from "../model/spec.ts";
import { embedWindows, type HiddenStates } from "./hidden.ts";
import type { MemoryPolicy } from "./memory_policy.ts";
import type { CompressOptions, CompressReport, ModelInput } from "./options.ts";
import { DEFAULT_HOLDOUT, holdoutSplit } from "./soco_pass.ts";

/**
 * Tokenise and cut the calibration windows (none for svd). For SoCo without given validation windows, the
 * text's last `soco.holdout` fraction is held out first (see `holdoutSplit`): its windows guard the training
 * and no training window contains their text, whether the calibration came as text or ids, through
 * `compress`, `compressSoco` or the CLI.
 */
export function calibrate(
  model: ModelInput,
  spec: LlamaSpec,
  opts: CompressOptions,
): { windows?: Int32Array[]; validation?: Int32Array[]; calibration?: CompressReport["calibration"] } {
  if (opts.method === "svd") return {};
  const c = opts.calibration!;
  const seqlen = c.seqlen ?? Math.min(256, spec.maxPositions);
  const samples = c.samples ?? 32;
  let ids: ArrayLike<number>;
  if (c.ids) ids = c.ids;
  else {
    if (!model.tokenizer) throw new OptionError(`compress: calibration.text needs the model's tokenizer`);
    ids = model.tokenizer.encode(c.text!, { bos: true });
  }
  let validation: Int32Array[] | undefined;
  if (opts.method === "soco" && !opts.soco?.validation) {
    const split = holdoutSplit(ids, opts.soco?.holdout ?? DEFAULT_HOLDOUT, samples, seqlen);
    if (split.validation.length > 0) [ids, validation] = [split.calib, split.validation];
  }
  const seed = c.seed ?? 0, layout = c.layout ?? "random";
  const windows = calibrationWindows(ids, { samples, seqlen, seed, layout });
  for (const w of [...windows, ...(validation ?? [])]) {
    for (const id of w) {
      if (!(id >= 0 && id < spec.vocabSize)) {
        throw new OptionError(
          `compress: calibration token id ${id} is outside the vocabulary (${spec.vocabSize})`,
        );
      }
    }
  }
  return { windows, validation, calibration: { samples, seqlen, tokens: ids.length, seed, layout } };
}

/**
 * Copy the tensors `names` (the embedding table among them) and embed the calibration windows from that
 * same read. A function of its own so that the vocab×hidden table dies with its frame: a local of the
 * long-running async `compressModel` would be kept alive by its suspended frame for the whole run.
 */
export async function copyAndEmbed(
  writer: { write(name: string, data: Float32Array): Promise<void> },
  reader: TensorReader,
  spec: LlamaSpec,
  names: readonly string[],
  windows: readonly Int32Array[] | undefined,
  useOrig: boolean,
  useComp: boolean,
  memory: MemoryPolicy,
): Promise<[HiddenStates | undefined, HiddenStates | undefined]> {
  let streams: [HiddenStates | undefined, HiddenStates | undefined] = [undefined, undefined];
  let embedded = false;
  const embedFrom = (data: Float32Array) => {
    streams = embedStreams(spec, data, windows!, useOrig, useComp);
    embedded = true;
  };
  for (const name of names) {
    await copyTensor(writer, reader, name, name === EMBED && windows ? embedFrom : undefined);
    memory.dropped(4 * reader.info(name).shape.reduce((a, b) => a * b, 1)); // died with copyTensor's frame
  }
  if (windows && !embedded) embedFrom(await reader.read(EMBED));
  return streams;
}

/** Copy one tensor, handing its values to `use` first. */
export async function copyTensor(
  writer: { write(name: string, data: Float32Array): Promise<void> },
  reader: TensorReader,
  name: string,
  use?: (data: Float32Array) => void,
): Promise<void> {
  const data = await reader.read(name);
  use?.(data);
  await writer.write(name, data);
}

/** Embed the calibration windows once or twice (original / compressed streams) from the table `data`. */
export function embedStreams(
  spec: LlamaSpec,
  data: Float32Array,
  windows: readonly Int32Array[],
  orig: boolean,
  comp: boolean,
): [HiddenStates | undefined, HiddenStates | undefined] {
  const table = { rows: spec.vocabSize, cols: spec.hiddenSize, data }; // vocab×hidden
  return [
    orig ? embedWindows(spec, table, windows) : undefined,
    comp ? embedWindows(spec, table, windows) : undefined,
  ];
}
