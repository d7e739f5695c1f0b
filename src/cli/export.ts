/**
 * The CLI's `export` command: `export IN OUT --format onnx [--dtype f32|f16|int8] [--kv-cache full|latent]
 * [--external-data] [--overwrite]` writes an ONNX folder (onnx/model.onnx, config.json, generation_config.json, tokenizer files)
 * that onnxruntime and transformers.js run.
 *
 * @example
 * ```ts ignore
 * import { cmdExport } from "./export.ts";
 * await cmdExport(["out/stories-svdllm", "out/stories-onnx", "--format", "onnx", "--dtype", "f16"]);
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { OptionError } from "../errors.ts";
import { EXPORT_DTYPES, exportOnnx } from "../export/onnx.ts";
import type { ExportDtype } from "../export/graph.ts";

/** Export formats the command knows. */
const FORMATS = ["onnx"] as const;

/** Usage of the export command (one line for the CLI's help). */
export const EXPORT_USAGE =
  "cli.ts export IN OUT --format onnx [--dtype f32|f16|int8] [--kv-cache full|latent] [--external-data] [--overwrite]";

/** Run `export` with its arguments (after the command name); prints what was written. */
export async function cmdExport(args: string[], print = (s: string) => console.log(s)): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      format: { type: "string" },
      dtype: { type: "string", default: "f32" },
      "external-data": { type: "boolean" },
      "kv-cache": { type: "string", default: "full" },
      overwrite: { type: "boolean" },
    },
  });
  if (positionals.length !== 2) {
    throw new OptionError(`export: expected two paths, IN and OUT\n\nusage: ${EXPORT_USAGE}`);
  }
  if (values.format === undefined) {
    throw new OptionError(`export: --format is required (supported: ${FORMATS.join(", ")})`);
  }
  if (!(FORMATS as readonly string[]).includes(values.format)) {
    throw new OptionError(
      `export: format ${JSON.stringify(values.format)} is not supported (supported: ${FORMATS.join(", ")})`,
    );
  }
  if (!(EXPORT_DTYPES as readonly string[]).includes(values.dtype)) {
    throw new OptionError(
      `export: --dtype ${JSON.stringify(values.dtype)} is not supported (supported: ${
        EXPORT_DTYPES.join(", ")
      })`,
    );
  }
  const r = await exportOnnx(positionals[0], positionals[1], {
    dtype: values.dtype as ExportDtype,
    overwrite: values.overwrite,
    externalData: values["external-data"] ? true : "auto",
    kvCache: values["kv-cache"] as "full" | "latent",
  });
  print(
    `exported ${positionals[0]} to ${r.output} (onnx, weights ${r.dtype}, ${r.bytes} bytes): ${
      r.files.join(", ")
    }`,
  );
}
