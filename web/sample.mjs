#!/usr/bin/env node
// Sample words from the model of this `zoo web` folder, in Node, one word a line:
//
//     node site/sample.mjs -n 20 --seed 0 [--temperature T] [--top-k K] [--prefix P]
//                          [--max-length L] [--start K]
//
// The same words as `zoo sample MODEL.onnx` with the same options (same generator, same
// inverse CDF), computed by onnxruntime-web's wasm backend. Bad options: one line, exit 2.

import { parseArgs } from "node:util";
import { loadModel } from "./model.mjs";
import { CHUNK, SettingsError } from "./sampler.mjs";

const USAGE = "usage: node sample.mjs [-n N] [--seed S] [--temperature T] [--top-k K] "
  + "[--prefix P] [--max-length L] [--start K]";

function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

const flag = (name) => (name.length === 1 ? `-${name}` : `--${name}`);

function integer(name, text, min = 0) {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < min || !Number.isSafeInteger(Number(text))) {
    fail(`${flag(name)} must be an integer >= ${min}, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function bigInteger(name, text) {
  if (text === undefined) return 0n;
  if (!/^\d+$/.test(text) || BigInt(text) >= 1n << 64n) {
    fail(`--${name} must be an integer in [0, 2**64), got ${JSON.stringify(text)}`);
  }
  return BigInt(text);
}

function parse(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        n: { type: "string", short: "n" }, seed: { type: "string" },
        temperature: { type: "string" }, "top-k": { type: "string" },
        prefix: { type: "string" }, "max-length": { type: "string" },
        start: { type: "string" }, help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    fail(`${e.message.split("\n")[0]} (${USAGE})`);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const temperature = values.temperature === undefined ? 1.0 : Number(values.temperature);
  if (values.temperature !== undefined
      && (values.temperature.trim() === "" || !Number.isFinite(temperature) || temperature <= 0)) {
    fail(`--temperature must be a number > 0, got ${JSON.stringify(values.temperature)}`);
  }
  return {
    n: integer("n", values.n) ?? 20,
    seed: bigInteger("seed", values.seed),
    temperature,
    topK: integer("top-k", values["top-k"], 1) ?? null,
    prefix: values.prefix ?? "",
    maxLength: integer("max-length", values["max-length"], 1) ?? 64,
    start: bigInteger("start", values.start),
  };
}

async function main() {
  const options = parse(process.argv.slice(2));
  const model = await loadModel(new URL("./", import.meta.url));
  let done = 0;
  do { // once even for -n 0, so bad settings are still reported
    const n = Math.min(CHUNK, options.n - done);
    const words = await model.sample({ ...options, n, start: options.start + BigInt(done) });
    if (words.length) process.stdout.write(`${words.join("\n")}\n`);
    done += n;
  } while (done < options.n);
}

main().catch((e) => {
  if (e instanceof SettingsError) fail(e.message);
  fail(`${e.message ?? e}`.split("\n")[0]);
});
