/**
 * fast-check with one seed for the whole suite, so the test command gives the same answer on every run: a
 * property test that fails, fails every time, and one that passes cannot fail by chance on the next run.
 * `FC_SEED=<integer>` replays another seed; `FC_SEED=random` draws a fresh one per run (printed), to explore.
 * A failure prints its seed and shrunk counterexample (replay with `fc.assert(prop, { seed, path })`).
 * Tests that pass their own `seed` keep it.
 * @module
 */
import fc from "fast-check";
import process from "node:process";

/** The suite's default seed; any fixed value works, changing it is a different (equally valid) test run. */
const DEFAULT_SEED = 20261207;

const asked = process.env.FC_SEED;
const seed = asked === "random"
  ? (Math.random() * 2 ** 31) | 0
  : asked === undefined || asked === ""
  ? DEFAULT_SEED
  : Number(asked);
if (!Number.isSafeInteger(seed)) throw new Error(`FC_SEED: expected an integer or "random", got "${asked}"`);
if (asked === "random") console.log(`fast-check seed ${seed} (FC_SEED=${seed} replays it)`);
fc.configureGlobal({ ...fc.readConfigureGlobal(), seed });

export default fc;
