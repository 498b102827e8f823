// web/sampler.mjs against tests/known_answers.json: the same choices, words, defaults and
// refusals as zoo.sampling.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  DEFAULTS, SettingsError, pick, sample, sampleSteps, settings,
} from "../../web/sampler.mjs";
import { TABLE, inWords, options } from "./known_answers.mjs";

const { vocab, context, bigram } = TABLE.words;
const V = vocab.length;

/** A window model that reads the last id of each context (``rows`` of ``T`` ids). */
function bigramWindow(T) {
  return async (ids, rows) => {
    const out = new Float32Array(rows * V);
    for (let r = 0; r < rows; r++) out.set(bigram[Number(ids[r * T + T - 1])], r * V);
    return out;
  };
}

/** The bigram table as a sequence model: no state, the logits of the id stepped on. */
const bigramSteps = {
  start: () => null,
  step: async (ids) => {
    const out = new Float32Array(ids.length * V);
    ids.forEach((id, r) => out.set(bigram[Number(id)], r * V));
    return { logits: out, state: null };
  },
  keep: (state) => state,
};

/** A model that ends every word at once. */
async function ending(ids, rows) {
  const out = new Float32Array(rows * V);
  for (let r = 0; r < rows; r++) out[r * V] = 100;
  return out;
}

function run(model, o) {
  return model === "steps" ? sampleSteps(bigramSteps, o) : sample(bigramWindow(o.context), o);
}

for (const c of TABLE.pick.cases) {
  test(`pick: ${c.about}`, () => {
    const k = c.top_k === null ? c.logits.length : Math.min(c.top_k, c.logits.length);
    assert.equal(pick(Float32Array.from(c.logits), c.u, c.temperature, k), c.id);
  });
}

for (const c of TABLE.words.cases) {
  test(`words: ${c.about}`, async () => {
    assert.deepEqual(await run(c.model, options(c.settings, { vocab, context })), c.words);
  });
}

for (const c of TABLE.refused.cases) {
  test(`refused: ${JSON.stringify(c.settings)}`, async () => {
    const o = options(c.settings, TABLE.refused.base);
    const model = c.model === "steps" ? sampleSteps(bigramSteps, o) : sample(ending, o);
    await assert.rejects(model, (e) => {
      assert.ok(e instanceof SettingsError, e.message);
      assert.ok(!e.message.includes("\n"), e.message);
      for (const fragment of c.says) assert.ok(e.message.includes(inWords(fragment)), e.message);
      return true;
    });
  });
}

for (const c of TABLE.accepted.cases) {
  test(`accepted: ${JSON.stringify(c.settings)}`, async () => {
    const o = options(c.settings, TABLE.accepted.base);
    assert.deepEqual(await sample(ending, o), new Array(o.n).fill(o.prefix ?? ""));
  });
}

test("the defaults", () => {
  const { about, ...defaults } = TABLE.defaults;
  assert.ok(about);
  const expected = options(defaults);
  assert.deepEqual({ ...DEFAULTS }, expected);
  const o = settings({ vocab, context });
  for (const [key, value] of Object.entries(expected)) assert.equal(o[key], value, key);
});
