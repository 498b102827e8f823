// The page's glue: load the model, fill in its card, sample on submit.
// The words are those of `zoo sample model.onnx` with the same settings (sampler.mjs).

import { loadModel } from "./model.mjs";

const $ = (id) => document.getElementById(id);

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").className = state === "error" ? "error" : "";
  document.body.dataset.state = state; // "ready", "busy", "done" or "error": tests wait on it
}

function fact(name, value) {
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = name;
  dd.textContent = value;
  $("facts").append(dt, dd);
}

/** "linear(out=200, bias=false)" for a spec entry (a name or a table). */
function entryText(entry) {
  if (typeof entry === "string") return entry;
  const { type, ...params } = entry;
  const args = Object.entries(params).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return `${type}(${args.join(", ")})`;
}

function showCard(card) {
  $("title").textContent = `layerzoo: ${card.source}`;
  $("description").textContent = card.spec?.description ?? "";
  fact("context", `${card.context} characters`);
  fact("vocabulary", `${card.vocab.length} symbols: ${card.vocab.slice(1).join("")}`);
  if (card.parameters !== null) fact("parameters", card.parameters.toLocaleString("en"));
  fact("weights", card.quantized ? `quantised (${card.quantized})` : "float32");
  for (const [name, value] of Object.entries(card.metrics ?? {})) {
    fact(name.replace("_", " "), typeof value === "number" ? value.toFixed(4) : String(value));
  }
  if (card.summary) {
    $("summary").textContent = card.summary;
  } else {
    const layers = card.spec?.model?.layers ?? [];
    $("summary").textContent = layers.map((e, i) => `${i}  ${entryText(e)}`).join("\n");
  }
  $("summary").hidden = false;
}

function readForm() {
  const topK = $("top-k").value.trim();
  const seed = $("seed").value.trim();
  if (!/^[0-9]+$/.test(seed)) throw new Error(`seed must be an integer >= 0, got "${seed}"`);
  return {
    n: Number($("n").value),
    seed: BigInt(seed),
    temperature: Number($("temperature").value),
    topK: topK === "" ? null : Number(topK),
    prefix: $("prefix").value,
  };
}

async function main() {
  let model;
  try {
    model = await loadModel(new URL("./", import.meta.url));
  } catch (e) {
    setStatus(`cannot load the model: ${e.message ?? e}`, "error");
    return;
  }
  showCard(model.card);
  $("sample").disabled = false;
  setStatus("ready", "ready");
  $("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("sample").disabled = true;
    setStatus("sampling…", "busy");
    try {
      const started = performance.now();
      const words = await model.sample(readForm());
      const items = words.map((word) => {
        const li = document.createElement("li");
        li.textContent = word;
        return li;
      });
      $("names").replaceChildren(...items);
      const ms = Math.round(performance.now() - started);
      setStatus(`${words.length} names in ${ms} ms`, "done");
    } catch (e) {
      $("names").replaceChildren();
      setStatus(e.message ?? String(e), "error");
    } finally {
      $("sample").disabled = false;
    }
  });
}

main();
