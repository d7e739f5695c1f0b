/**
 * mistral-swa-tiny (test/fixtures/models/) sets sliding_window 6, shorter than its 17-token reference inputs:
 * transformers lets each query see only the 6 latest positions. The library must either do the same or refuse
 * the model; computing full causal attention silently is wrong. Checked on the full pass, the KV-cached greedy
 * path (whose cache outgrows the window) and windowed perplexity.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { type LoadedModel, loadModel } from "../../src/model/load.ts";
import { OptionError } from "../../src/errors.ts";
import { perplexity } from "../../src/eval/perplexity.ts";
import { generate } from "../../src/eval/generate.ts";
import { LOGIT_TOL, logitError, NLL_TOL, type Reference, ROOT } from "./_hf_fixtures.ts";

test("mistral-swa-tiny: a sliding window shorter than the input is either applied as transformers does or refused", async () => {
  const dir = ROOT + "mistral-swa-tiny";
  const ref: Reference = JSON.parse(readFileSync(`${dir}/reference.json`, "utf8"));
  const window = JSON.parse(readFileSync(`${dir}/config.json`, "utf8")).sliding_window as number;
  const refused = (e: unknown) => e instanceof OptionError && /sliding/i.test(e.message);
  let m: LoadedModel;
  try {
    m = await loadModel(dir);
  } catch (e) {
    assert.ok(refused(e), `load failed for another reason: ${e}`);
    return;
  }
  try {
    let err: number;
    try {
      err = await logitError(m, ref);
    } catch (e) {
      assert.ok(refused(e), `forward failed for another reason: ${e}`);
      return;
    }
    assert.ok(
      err < LOGIT_TOL,
      `config.json sets sliding_window ${window} (17-token inputs), transformers attends to the last ${window} ` +
        `positions only; loadModel accepted it and the logits are off by ${err} (full causal attention?)`,
    );
    for (const [b, q] of ref.sequences.entries()) {
      const got = await generate(m, Int32Array.from(q.input_ids), q.greedy_next.length, { stopAtEos: false });
      assert.deepEqual(Array.from(got), q.greedy_next, `sequence ${b}: greedy (KV-cached) continuation`);
    }
    const r = await perplexity(m, Int32Array.from(ref.windowed.input_ids), { window: ref.windowed.window });
    assert.ok(Math.abs(r.meanNll - ref.windowed.mean_nll) < NLL_TOL, `windowed mean NLL ${r.meanNll}`);
  } finally {
    await m.close();
  }
});
