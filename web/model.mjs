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
import { sample, sampleSteps } from "./sampler.mjs";

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

/** The site's model, ready to sample: ``{ card, vocab, context, logits, sample }``. */
export async function loadModel(base) {
  const card = JSON.parse(new TextDecoder().decode(await readBytes(base, "model.json")));
  // one thread: the page needs no cross-origin isolation, and Node exits when done
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL("./", import.meta.url).href;
  ort.env.logLevel = "error";
  const session = await ort.InferenceSession.create(await readBytes(base, card.model), {
    executionProviders: ["wasm"],
  });
  const { vocab, context } = card;
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
    sample: (options) => sample(logits, { vocab, context, ...options }),
  };
}

/**
 * A sequence model's step graph (layerzoo format 2): ``token`` [rows], ``position`` [] and
 * the state ``past.NAME`` in; ``logits`` [rows, V] and ``present.NAME`` out. model.json's
 * ``state`` lists each NAME with its shape without the batch axis; every state starts at 0.
 */
function stepModel(card, session) {
  const { vocab, context } = card;
  const state = card.state.map(([name, dims]) => ({
    name, dims, size: dims.reduce((a, b) => a * b, 1),
  }));
  const stepper = {
    start: (rows) => state.map(({ size }) => ({ data: new Float32Array(rows * size), size })),
    async step(ids, current, position, rows) {
      const feeds = {
        token: new ort.Tensor("int64", ids, [rows]),
        position: new ort.Tensor("int64", BigInt64Array.of(BigInt(position)), []),
      };
      state.forEach(({ name, dims }, i) => {
        feeds[`past.${name}`] = new ort.Tensor("float32", current[i].data, [rows, ...dims]);
      });
      const result = await session.run(feeds);
      return {
        logits: result.logits.data,
        state: state.map(({ name, size }) => ({ data: result[`present.${name}`].data, size })),
      };
    },
  };
  return {
    card, vocab, context, stepper,
    sample: (options) => sampleSteps(stepper, { vocab, context, ...options }),
  };
}
