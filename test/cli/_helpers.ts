// Running cli.ts under the runtime running the test (deno or bun), on the bundled model and text.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** The repository root. */
export const root = fileURLToPath(new URL("../../", import.meta.url));
/** The bundled stories260K model. */
export const model = join(root, "models/stories260K/stories260K.gguf");
/** The bundled TinyStories text. */
export const text = join(root, "data/tinystories-valid.part1.txt");

/** The command line that runs `cli.ts args…` under this runtime: [executable, argv]. */
export function cliCommand(args: string[]): [string, string[]] {
  const isDeno = "Deno" in globalThis;
  return [
    process.execPath,
    isDeno ? ["run", "-A", join(root, "cli.ts"), ...args] : [join(root, "cli.ts"), ...args],
  ];
}

/** Run the CLI to completion: exit code, standard output and standard error. */
export function cli(...args: string[]): { code: number; out: string; err: string } {
  const [exe, argv] = cliCommand(args);
  const r = spawnSync(exe, argv, {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" },
    timeout: 600_000,
  });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}
