// The sampler: words from any function that maps contexts to next-character logits.
//
// A port of zoo/sampling.py and zoo/draw.py (same generator, same float64 inverse CDF, same
// top-k tie rule), so the same model and settings give the same words here as `zoo sample`:
//
//     import { sample } from "./sampler.mjs";
//     const words = await sample(logitsFn, { vocab, context: 3, n: 20, seed: 0n });
//
// ``logitsFn(ids, rows)`` takes an int64 BigInt64Array of ``rows`` contexts (row-major,
// ``context`` ids each) and resolves to a Float32Array of ``rows * vocab.length`` logits.
// All words of a call grow as one batch; a word that ends leaves it.

import { uniform, wordKey } from "./rng.mjs";

export const MAX_SEED = (1n << 64n) - 1n;
export const MAX_LENGTH = 2 ** 23; // characters of a word, as zoo.sampling's MAX_LENGTH
// words per batch, as zoo.sampling's CHUNK: an int8 file quantises its activations over a
// batch, so the same words need the same batches
export const CHUNK = 4096;
// a sequence model's batch is CHUNK halved until its state fits this, as zoo.sampling's
// STATE_BYTES: an int8 step graph's words depend on its batches
export const STATE_BYTES = 64 * 2 ** 20;

/** Words per batch for a sequence model whose state is ``floatsPerWord`` floats a word. */
export function stepChunk(floatsPerWord) {
  let rows = CHUNK;
  while (rows > 1 && rows * floatsPerWord * 4 > STATE_BYTES) rows = Math.floor(rows / 2);
  return rows;
}

// the settings a caller leaves out, as `zoo sample` and zoo.sampling.sample take them
// (tests/known_answers.json holds both to one table)
export const DEFAULTS = Object.freeze({
  n: 20, seed: 0n, start: 0n, temperature: 1.0, topK: null, prefix: "", maxLength: 64,
});

/** Bad settings: the message names the setting and what it must be. */
export class SettingsError extends Error {}

/** Whether ``vocab`` is '.' followed by distinct single characters (zoo.data.Vocab's rule). */
function isVocab(vocab) {
  return Array.isArray(vocab) && vocab.length >= 2 && vocab[0] === "."
    && vocab.every((c) => typeof c === "string" && [...c].length === 1)
    && new Set(vocab).size === vocab.length;
}

/** Check and normalise the settings; throws SettingsError naming every problem at once. */
export function settings(options) {
  const vocab = options.vocab;
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  const o = { ...DEFAULTS, ...given };
  const problems = [];
  const isCount = (v) => Number.isSafeInteger(v) && v >= 0;
  if (!isVocab(vocab)) {
    const shown = Array.isArray(vocab) ? vocab.map(String).join("") : String(vocab);
    problems.push("vocab must be '.' followed by distinct single characters, got "
      + JSON.stringify(shown.slice(0, 40)));
  }
  if (!Number.isSafeInteger(o.context) || o.context < 1) {
    problems.push(`context must be an integer >= 1, got ${o.context}`);
  }
  if (!isCount(o.n)) problems.push(`n must be an integer >= 0, got ${o.n}`);
  if (typeof o.seed !== "bigint" || o.seed < 0n || o.seed > MAX_SEED) {
    problems.push(`seed must be an integer in [0, 2**64), got ${o.seed}`);
  }
  if (typeof o.start !== "bigint" || o.start < 0n || o.start > MAX_SEED) {
    problems.push(`start must be an integer in [0, 2**64), got ${o.start}`);
  } else if (isCount(o.n) && o.n > 0 && o.start + BigInt(o.n) > MAX_SEED + 1n) {
    problems.push(`start + n must be at most 2**64 (word indices are uint64), got ${o.start} `
      + `+ ${o.n}`);
  }
  if (typeof o.temperature !== "number" || !Number.isFinite(o.temperature)
      || o.temperature <= 0) {
    problems.push(`temperature must be a number > 0 and finite, got ${o.temperature}`);
  }
  if (o.topK !== null && (!Number.isSafeInteger(o.topK) || o.topK < 1)) {
    problems.push(`top-k must be an integer >= 1, got ${o.topK}`);
  }
  const isText = typeof o.prefix === "string";
  if (!isText) problems.push(`prefix must be a string, got ${JSON.stringify(o.prefix)}`);
  if (!Number.isSafeInteger(o.maxLength) || o.maxLength < 1 || o.maxLength > MAX_LENGTH) {
    problems.push(`max-length must be an integer >= 1 and <= ${MAX_LENGTH.toLocaleString("en")}`
      + `, got ${o.maxLength}`);
  } else if (isText && [...o.prefix].length > o.maxLength) {
    problems.push(`prefix ${JSON.stringify(o.prefix)} is longer than max-length ${o.maxLength}`);
  }
  if (Array.isArray(vocab) && isText) {
    const unknown = [...o.prefix].filter((c) => c === "." || !vocab.includes(c));
    if (unknown.length) {
      const chars = [...new Set(unknown)].sort().map((c) => JSON.stringify(c)).join(", ");
      problems.push(`prefix ${JSON.stringify(o.prefix)} has characters outside the model's `
        + `vocabulary: ${chars} (the vocabulary is ${JSON.stringify(vocab.slice(1).join(""))})`);
    }
  }
  if (problems.length) throw new SettingsError(problems.join("; "));
  return o;
}

/**
 * Sample ``n`` words (words ``start`` .. ``start + n - 1`` of ``seed``).
 *
 * Each word starts with ``prefix`` and has at most ``maxLength`` characters (prefix
 * included); the closing '.' is left out. ``seed`` and ``start`` are BigInts.
 */
export async function sample(logitsFn, options) {
  const o = settings(options);
  const V = o.vocab.length;
  const T = o.context;
  const k = o.topK === null ? V : Math.min(o.topK, V);
  const prefixIds = [...o.prefix].map((c) => o.vocab.indexOf(c));
  const steps = o.maxLength - prefixIds.length;
  // each word: its key, its context window (last T ids) and the characters drawn so far
  const words = [];
  for (let w = 0; w < o.n; w++) {
    const ids = new Array(T).fill(0).concat(prefixIds).slice(-T);
    words.push({ key: wordKey(o.seed, o.start + BigInt(w)), window: ids, drawn: [] });
  }
  let active = words.filter(() => steps > 0);
  for (let s = 0; s < steps && active.length; s++) {
    const batch = new BigInt64Array(active.length * T); // (A, T)
    active.forEach((word, r) => {
      for (let t = 0; t < T; t++) batch[r * T + t] = BigInt(word.window[t]);
    });
    const logits = await logitsFn(batch, active.length); // (A, V) float32
    if (logits.length !== active.length * V) {
      throw new Error(`the model returned ${logits.length} logits for ${active.length} `
        + `contexts; expected ${active.length * V} for a ${V}-symbol vocabulary`);
    }
    const next = [];
    active.forEach((word, r) => {
      const id = pick(logits.subarray(r * V, (r + 1) * V), uniform(word.key, s),
        o.temperature, k);
      if (id !== 0) {
        word.drawn.push(id);
        word.window.shift();
        word.window.push(id);
        next.push(word);
      }
    });
    active = next;
  }
  return words.map((word) => o.prefix + word.drawn.map((id) => o.vocab[id]).join(""));
}

/**
 * The words of ``sample`` from a sequence model's step graph (layerzoo format 2), stepped
 * without computing a position twice, as zoo.sampling steps it: position 0 takes '.', the next
 * positions the prefix, each later one the id drawn before it. A word ends at '.', at
 * ``maxLength`` characters, or when the context's T positions are used.
 *
 * ``stepper.start(rows)`` gives the zero state; ``stepper.step(ids, state, position)``
 * resolves to ``{ logits, state }`` for the BigInt64Array ``ids`` (one per row); and
 * ``stepper.keep(state, rows)`` keeps the state of the rows ``rows`` (indices) only.
 */
export async function sampleSteps(stepper, options) {
  const o = settings(options);
  const V = o.vocab.length;
  const T = o.context;
  const k = o.topK === null ? V : Math.min(o.topK, V);
  const prefixIds = [...o.prefix].map((c) => o.vocab.indexOf(c));
  if (prefixIds.length >= T) {
    throw new SettingsError(`prefix ${JSON.stringify(o.prefix)} has ${prefixIds.length} `
      + `characters, but this sequence model holds words of at most ${T} (its context), so a `
      + `prefix may have at most ${T - 1}`);
  }
  const steps = Math.min(o.maxLength, T) - prefixIds.length;
  const words = [];
  for (let w = 0; w < o.n; w++) {
    words.push({ key: wordKey(o.seed, o.start + BigInt(w)), drawn: [] });
  }
  let state = stepper.start(words.length);
  let ids = new BigInt64Array(words.length); // position 0 takes '.'
  for (let p = 0; p < prefixIds.length; p++) {
    ({ state } = await stepper.step(ids, state, p));
    ids = new BigInt64Array(words.length).fill(BigInt(prefixIds[p]));
  }
  // as zoo.sampling steps them: a word that ends keeps its row (computed, ignored) until fewer
  // than half the rows grow, then the state is cut to those rows; an int8 file's activations
  // are quantised over the whole batch, so both samplers keep the same rows to give the same
  // words
  let batch = words.map((_, w) => w); // the word of each row
  let growing = batch.map(() => steps > 0);
  for (let s = 0; s < steps && growing.some(Boolean); s++) {
    const out = await stepper.step(ids, state, prefixIds.length + s);
    if (out.logits.length !== batch.length * V) {
      throw new Error(`the model returned ${out.logits.length} logits for ${batch.length} `
        + `sequences; expected ${batch.length * V} for a ${V}-symbol vocabulary`);
    }
    state = out.state;
    batch.forEach((w, r) => {
      if (!growing[r]) return;
      const id = pick(out.logits.subarray(r * V, (r + 1) * V), uniform(words[w].key, s),
        o.temperature, k);
      ids[r] = BigInt(id);
      if (id === 0) growing[r] = false;
      else words[w].drawn.push(id);
    });
    const kept = batch.flatMap((_, r) => (growing[r] ? [r] : []));
    if (kept.length * 2 < batch.length) {
      state = stepper.keep(state, kept);
      batch = kept.map((r) => batch[r]);
      ids = BigInt64Array.from(kept, (r) => ids[r]);
      growing = kept.map(() => true);
    }
  }
  return words.map((word) => o.prefix + word.drawn.map((id) => o.vocab[id]).join(""));
}

/** Inverse-CDF choice from softmax(logits / temperature) over the top k, in float64. */
export function pick(logits, u, temperature, k) {
  const V = logits.length;
  const z = Float64Array.from(logits); // (V,)
  if (!z.every(Number.isFinite)) {
    throw new Error("the model returned non-finite logits (NaN or inf); its weights are broken");
  }
  if (k < V) {
    const kth = Float64Array.from(z).sort().at(V - k); // the k-th largest
    for (let i = 0; i < V; i++) if (z[i] < kth) z[i] = -Infinity; // ties at kth stay in
  }
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (z[i] > max) max = z[i];
  let total = 0;
  const cdf = new Float64Array(V);
  for (let i = 0; i < V; i++) {
    total += Math.exp((z[i] - max) / temperature); // subtract first: any temperature > 0
    cdf[i] = total;
  }
  const target = Math.min(u * total, nextBelow(total));
  let chosen = 0;
  for (let i = 0; i < V; i++) if (cdf[i] <= target) chosen++;
  return chosen;
}

const scratch = new DataView(new ArrayBuffer(8));

/** The largest float64 below a positive finite ``x`` (numpy's nextafter(x, 0)). */
function nextBelow(x) {
  scratch.setFloat64(0, x);
  scratch.setBigUint64(0, scratch.getBigUint64(0) - 1n);
  return scratch.getFloat64(0);
}

/**
 * ``sampleBatch(options)`` (``sample`` or ``sampleSteps`` over a model) run on the words of
 * ``options`` in batches of ``rows`` (``CHUNK``, or ``stepChunk`` for a sequence model), as
 * zoo.sampling makes them; the words, in order.
 */
export async function inChunks(sampleBatch, options, rows = CHUNK) {
  const o = settings(options); // bad settings are refused even for n = 0
  const words = [];
  let done = 0;
  do {
    const n = Math.min(rows, o.n - done);
    words.push(...await sampleBatch({ ...options, n, start: o.start + BigInt(done) }));
    done += n;
  } while (done < o.n);
  return words;
}
