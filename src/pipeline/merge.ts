/**
 * Merge a compressed model's low-rank factors back into dense weights: `<prefix>.svd_a` (out×k) and
 * `<prefix>.svd_b` (k×in) become `<prefix>.weight` = A·B. The result is an ordinary Hugging Face folder
 * (bigger again, but loadable by any LLaMA implementation), written atomically like {@link compress}'s.
 *
 * @module
 */
import { FormatError, OptionError } from "../errors.ts";
import { createSafetensorsStreamWriter, type TensorPlan } from "../io/safetensors_writer.ts";
import { openModelWeights } from "../io/sharded.ts";
import { checkedReader } from "../io/tensor_reader.ts";
import { parseJsonObject, readTextFile } from "../io/text_file.ts";
import { matmul } from "../linalg/gemm.ts";
import { SVD_A, SVD_B } from "../model/names.ts";
import { folderSideFiles, storageDtype, writeConfig, writeSideFiles } from "./output.ts";
import { openFolderSink } from "./sink_folder.ts";
import { readSvdLlmConfig } from "./svd_llm_config.ts";

/** Options of {@link merge}. */
export interface MergeOptions {
  /** Replace an existing output folder. */
  overwrite?: boolean;
}

/** What {@link merge} did. */
export interface MergeReport {
  /** Linears merged. */
  merged: string[];
  /** Values stored after merging. */
  params: number;
}

/**
 * Merge the compressed folder `input` into a dense folder `output`. Throws FormatError when a factor lacks its
 * partner or the shapes disagree; nothing is left under `output` on failure.
 *
 * @example
 * ```ts ignore
 * import { merge } from "./merge.ts";
 * await merge("out/tinylm-svdllm", "out/tinylm-svdllm-dense");
 * ```
 */
export async function merge(input: string, output: string, opts: MergeOptions = {}): Promise<MergeReport> {
  const { join } = await import("node:path");
  if (/\.gguf$/i.test(input)) {
    throw new OptionError(
      `merge: ${input} is a GGUF file, which holds no low-rank factors; merge reads a folder written by compress`,
    );
  }
  const reader = checkedReader(await openModelWeights(input));
  let out;
  try {
    out = await openFolderSink(output, { overwrite: opts.overwrite, inputs: [input], action: "merge" });
  } catch (e) {
    await reader.close(); // a refused destination must not leak the input's file handle
    throw e;
  }
  try {
    if (!reader.tensors().some((t) => t.name.endsWith(`.${SVD_A}`))) {
      throw new FormatError(
        reader.name,
        `merge: no low-rank factors (<linear>.${SVD_A} / .${SVD_B}) in this model: it is dense already`,
      );
    }
    const plan: TensorPlan[] = [];
    const merged: string[] = [];
    let params = 0;
    for (const t of reader.tensors()) {
      if (t.name.endsWith(`.${SVD_B}`)) continue;
      if (t.name.endsWith(`.${SVD_A}`)) {
        const prefix = t.name.slice(0, -SVD_A.length - 1);
        const bName = `${prefix}.${SVD_B}`;
        if (!reader.has(bName)) {
          throw new FormatError(reader.name, `merge: ${t.name} has no partner ${bName}`);
        }
        const b = reader.info(bName);
        if (b.shape[0] !== t.shape[1]) {
          throw new FormatError(reader.name, `merge: ${t.name} is [${t.shape}] but ${bName} is [${b.shape}]`);
        }
        plan.push({
          name: `${prefix}.weight`,
          dtype: storageDtype(t.dtype),
          shape: [t.shape[0], b.shape[1]],
        });
        merged.push(prefix);
        params += t.shape[0] * b.shape[1];
      } else {
        plan.push({ name: t.name, dtype: storageDtype(t.dtype), shape: [...t.shape] });
        params += t.shape.reduce((x, y) => x * y, 1);
      }
    }
    for (const t of reader.tensors()) {
      if (t.name.endsWith(`.${SVD_B}`) && !reader.has(t.name.slice(0, -SVD_B.length) + SVD_A)) {
        throw new FormatError(reader.name, `merge: ${t.name} has no partner svd_a`);
      }
    }
    const writer = await createSafetensorsStreamWriter(await out.file("model.safetensors"), plan, {
      metadata: { format: "pt" },
      name: join(output, "model.safetensors"),
    });
    const isMerged = new Set(merged);
    try {
      for (const p of plan) {
        const prefix = p.name.replace(/\.weight$/, "");
        if (isMerged.has(prefix) && p.name.endsWith(".weight")) {
          const ai = reader.info(`${prefix}.${SVD_A}`), bi = reader.info(`${prefix}.${SVD_B}`);
          const a = { rows: ai.shape[0], cols: ai.shape[1], data: await reader.read(ai.name) };
          const b = { rows: bi.shape[0], cols: bi.shape[1], data: await reader.read(bi.name) };
          await writer.write(p.name, matmul(a, b).data);
        } else {
          await writer.write(p.name, await reader.read(p.name));
        }
      }
      await writer.close();
    } catch (e) {
      await writer.abort();
      throw e;
    }
    const configPath = join(input, "config.json");
    const configText = await readTextFile(configPath, "merge: read config.json", true);
    if (configText !== undefined) {
      const config = parseJsonObject(configText, configPath, "merge: read config.json");
      const section = readSvdLlmConfig(config);
      if (section) config.svd_llm = { ...section, merged: true };
      await writeConfig(out, config);
    }
    await writeSideFiles(out, { files: folderSideFiles(input) });
    await out.commit();
    return { merged, params };
  } catch (e) {
    await out.abort();
    throw e;
  } finally {
    await reader.close();
  }
}
