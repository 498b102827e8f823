// tests/known_answers.json for the JavaScript tests: the table, and its settings as the web
// sampler takes them (topK, maxLength; seed and start as BigInt).

import { readFileSync } from "node:fs";

export const TABLE = JSON.parse(readFileSync(new URL("../known_answers.json", import.meta.url),
  "utf8"));

// zoo.sampling's keyword -> the web sampler's option (also the word its messages use)
const OPTION = { top_k: ["topK", "top-k"], max_length: ["maxLength", "max-length"] };

/** The table's spelling of what JSON cannot hold: {"int": digits}, {"float": "inf"}. */
function decode(value) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    if ("int" in value) return BigInt(value.int);
    if ("float" in value) return { inf: Infinity, "-inf": -Infinity, nan: NaN }[value.float];
  }
  return value;
}

/** A seed or word index of the table as a BigInt (a non-integer stays as it is, to be refused). */
export function bigint(value) {
  const v = decode(value);
  return typeof v === "number" && Number.isInteger(v) ? BigInt(v) : v;
}

/** A case's settings over ``base`` (the table's names) as the web sampler's options. */
export function options(settings, base = {}) {
  const out = {};
  for (const [key, raw] of Object.entries({ ...base, ...settings })) {
    const value = key === "seed" || key === "start" ? bigint(raw) : decode(raw);
    out[OPTION[key]?.[0] ?? key] = value;
  }
  return out;
}

/** A message fragment of the table in the web sampler's words for its options. */
export function inWords(fragment) {
  return Object.entries(OPTION).reduce((text, [name, [, word]]) => text.replaceAll(name, word),
    fragment);
}
