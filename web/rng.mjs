// The sampler's random numbers: a counter-based SplitMix64-style hash of (seed, word, step).
//
// A port of zoo/draw.py's generator, bit for bit: every value is an unsigned 64-bit
// integer (BigInt wrapped with BigInt.asUintN(64, ...)), so word i of a seed is the same
// here, in numpy, and whatever the batch or the order in which words are drawn.
//
//     import { wordKey, uniform } from "./rng.mjs";
//     const u = uniform(wordKey(0n, 5n), 0);   // float64 in [0, 1) for word 5, step 0

const MASK = (1n << 64n) - 1n;
export const GOLDEN = 0x9e3779b97f4a7c15n;
const M1 = 0xbf58476d1ce4e5b9n;
const M2 = 0x94d049bb133111ebn;
const TWO_POW_MINUS_53 = 2 ** -53;

/** SplitMix64's finaliser of a 64-bit BigInt, modulo 2**64. */
export function mix64(z) {
  z &= MASK;
  z ^= z >> 30n;
  z = (z * M1) & MASK;
  z ^= z >> 27n;
  z = (z * M2) & MASK;
  z ^= z >> 31n;
  return z;
}

/** The key of word ``index`` (BigInt, start + position) under ``seed`` (BigInt in [0, 2**64)). */
export function wordKey(seed, index) {
  return mix64(mix64(seed + GOLDEN) ^ (BigInt(index) & MASK));
}

/** The uniform float64 in [0, 1) for ``step`` (0-based, prefix not counted) of a word's key. */
export function uniform(key, step) {
  const bits = mix64(key + BigInt(step + 1) * GOLDEN) >> 11n; // 53 random bits
  return Number(bits) * TWO_POW_MINUS_53;
}
