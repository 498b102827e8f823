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
import { sample } from "./sampler.mjs";

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
