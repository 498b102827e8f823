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
import { CHUNK, DEFAULTS, SettingsError } from "./sampler.mjs";

const USAGE = "usage: node sample.mjs [-n N] [--seed S] [--temperature T] [--top-k K] "
  + "[--prefix P] [--max-length L] [--start K]";

function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

const flag = (name) => (name.length === 1 ? `-${name}` : `--${name}`);

// numbers as zoo/options.py reads them: decimal notation only, out-of-range values named
const WHOLE = /^-?[0-9]+$/;
const DECIMAL = /^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/;
const VALUED = new Set(["-n", "--n", "--seed", "--temperature", "--top-k", "--prefix",
  "--max-length", "--start"]);

function integer(name, text, min = 0) {
  if (text === undefined) return undefined;
  if (!WHOLE.test(text) || Number(text) < min || !Number.isSafeInteger(Number(text))) {
    fail(`${flag(name)}: expected a whole number >= ${min}, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function bigInteger(name, text) {
  if (text === undefined) return undefined;
  if (!WHOLE.test(text) || BigInt(text) < 0n) {
    fail(`--${name}: expected a whole number >= 0, got ${JSON.stringify(text)}`);
  }
  if (BigInt(text) >= 1n << 64n) {
    fail(`--${name} must be an integer in [0, 2**64), got ${JSON.stringify(text)}`);
  }
  return BigInt(text);
}

/** ``-n -1`` as ``--n=-1``: node's parseArgs takes a value that starts with '-' for an option. */
function joinNegatives(argv) {
  const out = [];
  for (let i = 0; i < argv.length; i++) {
    if (VALUED.has(argv[i]) && i + 1 < argv.length && /^-[0-9.]/.test(argv[i + 1])) {
      out.push(`${argv[i] === "-n" ? "--n" : argv[i]}=${argv[i + 1]}`);
      i++;
    } else {
      out.push(argv[i]);
    }
  }
  return out;
}

function parse(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: joinNegatives(argv),
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
  if (values.temperature !== undefined && !DECIMAL.test(values.temperature)) {
    fail(`--temperature: expected a decimal number, got ${JSON.stringify(values.temperature)}`);
  }
  return {
    n: integer("n", values.n) ?? DEFAULTS.n,
    seed: bigInteger("seed", values.seed) ?? DEFAULTS.seed,
    temperature: values.temperature === undefined ? DEFAULTS.temperature
      : Number(values.temperature),
    topK: integer("top-k", values["top-k"], 1) ?? DEFAULTS.topK,
    prefix: values.prefix ?? DEFAULTS.prefix,
    maxLength: integer("max-length", values["max-length"], 1) ?? DEFAULTS.maxLength,
    start: bigInteger("start", values.start) ?? DEFAULTS.start,
  };
}

async function main() {
  const options = parse(process.argv.slice(2));
  const model = await loadModel(new URL("./", import.meta.url));
  let done = 0;
  do { // once even for -n 0, so bad settings are still reported
    const n = Math.min(CHUNK, options.n - done);
    const words = await model.sample({ ...options, n, start: options.start + BigInt(done) });
    if (words.length) await write(`${words.join("\n")}\n`);
    done += n;
  } while (done < options.n);
}

/**
 * Write and wait until the text is out: sampling never yields to Node's I/O otherwise, so a
 * reader that went away (`| head -3`) would go unnoticed; then stop, quietly.
 */
function write(text) {
  return new Promise((resolve) => {
    process.stdout.write(text, (e) => {
      if (!e) resolve();
      else if (e.code === "EPIPE") process.exit(0);
      else fail(`cannot write the words: ${e.message}`);
    });
  });
}

main().catch((e) => {
  if (e instanceof SettingsError) fail(e.message);
  fail(`${e.message ?? e}`.split("\n")[0]);
});
