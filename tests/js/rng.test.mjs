// web/rng.mjs against tests/known_answers.json: the same uniforms as zoo.sampling.

import assert from "node:assert/strict";
import { test } from "node:test";
import { GOLDEN, mix64, uniform, wordKey } from "../../web/rng.mjs";
import { TABLE, bigint } from "./known_answers.mjs";

const outputs = TABLE.splitmix64.outputs.map(BigInt);

test("mix64 of k * GOLDEN is SplitMix64's published stream for seed 0", () => {
  const mask = (1n << 64n) - 1n;
  assert.deepEqual(outputs.map((_, k) => mix64((BigInt(k + 1) * GOLDEN) & mask)), outputs);
});

test("the word of seed 0 at index SplitMix64's first output draws that stream", () => {
  const key = wordKey(0n, outputs[0]);
  assert.equal(key, 0n);
  assert.deepEqual(outputs.map((_, step) => uniform(key, step)),
    outputs.map((out) => Number(out >> 11n) * 2 ** -53));
});

for (const c of TABLE.generator.cases) {
  test(`uniforms of seed ${bigint(c.seed)}, word ${bigint(c.index)}`, () => {
    const key = wordKey(bigint(c.seed), bigint(c.index));
    assert.deepEqual(c.steps.map((step) => uniform(key, step)), c.u);
  });
}
