// The model of a `zoo web` folder: model.json (vocab, context, card) and the .onnx file in an
// onnxruntime-web session on its wasm backend, in a browser or in Node.
//
//     import { loadModel } from "./model.mjs";
//     const model = await loadModel(new URL("./", import.meta.url));
//     const words = await model.sample({ n: 20, seed: 0n });
//
// onnxruntime-web cannot read an ONNX file's custom metadata, so `zoo web` writes what the
// sampler needs into model.json next to the model.

import * as ort from "./ort.wasm.min.mjs";
import { inChunks, sample, sampleSteps, stepChunk } from "./sampler.mjs";

const IN_NODE = typeof process !== "undefined" && Boolean(process.versions?.node);

/** Fetch (browser) or read (Node) a file of the site folder ``base`` (a URL) as bytes. */
async function readBytes(base, name) {
  const url = new URL(name, base);
  if (IN_NODE && url.protocol === "file:") {
    const { readFile } = await import("node:fs/promises");
    return new Uint8Array(await readFile(url));
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot load ${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

const MAX_CONTEXT = 4096; // as zoo.spec's MAX_CONTEXT
const MAX_STATE = 1 << 24; // floats of state per sequence: far above any zoo model
const FILE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/; // a file of the site folder, no path or URL

/** Every problem of model.json at once (before anything is loaded), or none. */
function cardProblems(card) {
  if (card === null || typeof card !== "object" || Array.isArray(card)) return ["not an object"];
  const problems = [];
  const { vocab, context, model, state } = card;
  if (!Array.isArray(vocab) || vocab.length < 2 || vocab[0] !== "."
      || vocab.some((c) => typeof c !== "string" || [...c].length !== 1)
      || new Set(vocab).size !== vocab.length) {
    problems.push("vocab must be '.' followed by distinct single characters");
  }
  if (!Number.isSafeInteger(context) || context < 1 || context > MAX_CONTEXT) {
    problems.push(`context must be an integer from 1 to ${MAX_CONTEXT}, got `
      + `${JSON.stringify(context)}`);
  }
  if (typeof model !== "string" || !FILE_NAME.test(model)) {
    problems.push(`model must be the name of a file in the site folder, got `
      + `${JSON.stringify(model)}`);
  }
  if (typeof card.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(card.sha256)) {
    problems.push("sha256 must be the model file's sha256 (64 hex digits)");
  }
  if (card.format !== "1" && card.format !== "2") {
    problems.push(`format must be "1" or "2", got ${JSON.stringify(card.format)}`);
  } else if (card.format === "2" && !(Array.isArray(state) && state.every((s) => Array.isArray(s)
      && typeof s[0] === "string" && typeof s[2] === "boolean" && Array.isArray(s[1])
      && s[1].length >= 1 && s[1].every((d) => Number.isSafeInteger(d) && d >= 1))
      && state.reduce((n, s) => n + s[1].reduce((a, b) => a * b, 1), 0) <= MAX_STATE)) {
    problems.push("state must list [name, dims, cache] entries of positive sizes");
  }
  return problems;
}

/** The hex sha256 of ``bytes``, or null where WebCrypto is missing (a plain-http LAN page). */
async function sha256(bytes) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return null;
  const digest = new Uint8Array(await subtle.digest("SHA-256", bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The site's model, ready to sample: ``{ card, vocab, context, logits, sample }``. */
export async function loadModel(base) {
  let card;
  try {
    card = JSON.parse(new TextDecoder().decode(await readBytes(base, "model.json")));
  } catch (e) {
    throw new Error(`model.json: ${`${e.message ?? e}`.split("\n")[0]}`);
  }
  const problems = cardProblems(card);
  if (problems.length) throw new Error(`model.json: ${problems.join("; ")}`);
  // one thread: the page needs no cross-origin isolation, and Node exits when done
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL("./", import.meta.url).href;
  ort.env.logLevel = "error";
  const bytes = await readBytes(base, card.model);
  const digest = await sha256(bytes);
  if (digest !== null && digest !== card.sha256) {
    throw new Error(`${card.model} is not the model model.json describes (its sha256 is `
      + `${digest.slice(0, 12)}..., model.json says ${card.sha256.slice(0, 12)}...); write the `
      + "folder again with `zoo web`");
  }
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  const { vocab, context } = card;
  const wrong = card.format === "2"
    ? card.state.filter(([name]) => !session.inputNames.includes(`past.${name}`))
      .map(([name]) => `state ${JSON.stringify(name)} is not an input of the model`)
    : [session.inputMetadata?.[0]?.shape?.[1]].filter((t) => typeof t === "number"
      && t !== context).map((t) => `context ${context} is not the model's (${t})`);
  if (wrong.length) throw new Error(`model.json: ${wrong.join("; ")}`);
  if (card.format === "2") return stepModel(card, session);
  const input = session.inputNames[0];
  const output = session.outputNames[0];

  /** float32 logits (rows * V) for ``rows`` int64 contexts (rows * T, row-major). */
  async function logits(ids, rows) {
    const feeds = { [input]: new ort.Tensor("int64", ids, [rows, context]) };
    const result = await session.run(feeds);
    return result[output].data;
  }

  return {
    card, vocab, context, logits,
    sample: (options) => inChunks((batch) => sample(logits, batch),
      { vocab, context, ...options }),
  };
}

/**
 * A sequence model's step graph (layerzoo format 2): ``token`` [rows], ``position`` [] and
 * the state ``past.NAME`` in; ``logits`` [rows, V] and ``present.NAME`` out. model.json's
 * ``state`` lists each NAME with its dims (no batch axis) and whether it is a cache. A cache
 * is kept as [T, rows, ...] (time first) and fed as its first ``position`` entries; the
 * graph gives this position's entry, written at ``position``. Every other state tensor is
 * [rows, ...] and replaced. Every state starts at zeros.
 */
function stepModel(card, session) {
  const { vocab, context } = card;
  const layout = card.state.map(([name, dims, cache]) => {
    const rest = (cache ? dims.slice(1) : dims);
    return { name, cache, rest, width: rest.reduce((a, b) => a * b, 1), length: dims[0] };
  });
  // words per batch: the state of every position, as zoo.sampling.step_chunk counts it
  const batchRows = stepChunk(layout.reduce((n, { cache, width, length }) =>
    n + width * (cache ? length : 1), 0));
  const make = (rows) => layout.map(({ cache, width, length }) => ({
    rows, data: new Float32Array(rows * width * (cache ? length : 1)),
  }));
  const stepper = {
    start: make,
    async step(ids, state, position) {
      const rows = ids.length;
      const feeds = {
        token: new ort.Tensor("int64", ids, [rows]),
        position: new ort.Tensor("int64", BigInt64Array.of(BigInt(position)), []),
      };
      layout.forEach(({ name, cache, rest, width }, i) => {
        feeds[`past.${name}`] = cache
          ? new ort.Tensor("float32", state[i].data.subarray(0, position * rows * width),
            [position, rows, ...rest])
          : new ort.Tensor("float32", state[i].data, [rows, ...rest]);
      });
      const result = await session.run(feeds);
      const next = layout.map(({ name, cache, width }, i) => {
        const entry = result[`present.${name}`].data;
        if (!cache) return { rows, data: entry };
        state[i].data.set(entry, position * rows * width); // entry `position`, in place
        return state[i];
      });
      return { logits: result.logits.data, state: next };
    },
    keep(state, kept) {
      const fresh = make(kept.length);
      layout.forEach(({ cache, width, length }, i) => {
        const { rows, data } = state[i];
        for (let t = 0; t < (cache ? length : 1); t++) {
          kept.forEach((r, j) => {
            const from = (t * rows + r) * width;
            fresh[i].data.set(data.subarray(from, from + width), (t * kept.length + j) * width);
          });
        }
      });
      return fresh;
    },
  };
  return {
    card, vocab, context, stepper,
    sample: (options) => inChunks((batch) => sampleSteps(stepper, batch),
      { vocab, context, ...options }, batchRows),
  };
}
