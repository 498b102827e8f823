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
import { inChunks, sample, sampleSteps } from "./sampler.mjs";

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
      { vocab, context, ...options }),
  };
}
