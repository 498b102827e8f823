"""zoo web: the static folder, its Node sampler (the same words as ``zoo sample``, every preset,
fp32 and int8), the standard-library server, and the bad-input matrix.

Node is required, not optional: ``make test`` installs onnxruntime-web with ``npm ci``, so a
missing ``node`` or ``node_modules`` fails these tests rather than skipping them.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from lanes import slow_but
from matrix import SAMPLING_REFUSED, assert_clean_error, snapshot

import zoo.sampling
from zoo import webpage as web
from zoo.export.runtime import OnnxModel
from zoo.export.web import (
    ORT_ENV,
    ORT_FILES,
    ORT_SUBDIR,
    ORT_VERSION,
    PAGE_FILES,
    build_site,
    server,
)
from zoo.registry import get_registry
from zoo.sampling import CHUNK

pytest_plugins = ["websites"]  # the `site` fixture
PRESETS = sorted(get_registry().presets)  # every installed preset, third-party ones too
PLUGIN_OF = {name: preset.plugin for name, preset in get_registry().presets.items()}
BUILTIN = {name for name, info in get_registry().plugins.items() if info.builtin}
Exported = Callable[[str], tuple[Path, Path]]
# (zoo sample / node sample.mjs options): defaults, a cold top-k, a hot prefix, and for one
# preset also greedy and cut short, and words far from the start of the largest seed
OPTIONS = {
    "defaults": ["-n", "40"],
    "top-k": ["-n", "40", "--seed", "7", "--temperature", "0.6", "--top-k", "4"],
    "prefix": ["-n", "30", "--seed", "3", "--temperature", "1.7", "--prefix", "ma"],
    "greedy": ["-n", "10", "--top-k", "1", "--max-length", "6", "--prefix", "k"],
    "start": ["-n", "20", "--seed", str(2**64 - 1), "--start", "123456789"],
}
EVERY_PRESET = ("defaults", "top-k", "prefix")
INT8_OPTIONS = ("defaults", "prefix")
NODE_TIMEOUT = 120


def node() -> str:
    path = shutil.which("node")
    assert path, "node is not installed: the web sampler's tests need Node.js (apt install nodejs)"
    return path


def node_words(folder: Path, args: list[str]) -> list[str]:
    done = subprocess.run([node(), str(folder / "sample.mjs"), *args], capture_output=True,
                          text=True, timeout=NODE_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def zoo_words(cli, model: Path, args: list[str]) -> list[str]:
    result = cli("sample", str(model), *args)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def let_in(preset: str, allow_plugins) -> None:
    """The `cli` fixture loads built-in plugins only: let in the plugin of ``preset``."""
    if PLUGIN_OF[preset] not in BUILTIN:
        allow_plugins(PLUGIN_OF[preset])


@pytest.mark.parametrize("preset", slow_but(PRESETS, "mlp-bn"))
def test_node_sampler_gives_zoo_sample_words(preset: str, site, cli, allow_plugins) -> None:
    let_in(preset, allow_plugins)
    folder = site(preset)
    for name in OPTIONS if preset == "mlp-bn" else EVERY_PRESET:
        args = OPTIONS[name]
        words = node_words(folder, args)
        assert words == zoo_words(cli, folder / "model.onnx", args), name
        assert len(words) == int(args[1]), name
    assert all(w.startswith("ma") for w in node_words(folder, OPTIONS["prefix"]))


@pytest.mark.parametrize("preset", slow_but(PRESETS, "mlp-bn"))
def test_node_sampler_gives_zoo_sample_words_int8(preset: str, site, cli,
                                                  allow_plugins) -> None:
    let_in(preset, allow_plugins)
    folder = site(preset, int8=True)
    assert json.loads((folder / "model.json").read_text())["quantized"] == "int8-dynamic"
    for name in INT8_OPTIONS:
        words = node_words(folder, OPTIONS[name])
        assert words == zoo_words(cli, folder / "model.onnx", OPTIONS[name]), name


def test_the_web_sampler_batches_words_as_zoo_sampling_does() -> None:
    """An int8 file quantises its activations over a batch: the page and Node give a model
    the words in zoo.sampling's batches (CHUNK words, from the first)."""
    sampler = (Path(web.__file__).parent / "sampler.mjs").as_uri()
    script = (f"import {{ CHUNK, inChunks }} from {json.dumps(sampler)};"
              "const calls = [];"
              "const words = await inChunks(async (o) => { calls.push([o.n, String(o.start)]);"
              "  return Array.from({ length: o.n }, (_, i) => `${o.start + BigInt(i)}`); },"
              "  { vocab: ['.', 'a'], context: 3, n: 2 * CHUNK + 5, start: 7n });"
              "console.log(JSON.stringify({ CHUNK, calls, words: words.length,"
              "  last: words.at(-1) }));")
    done = subprocess.run([node(), "--input-type=module", "-e", script], capture_output=True,
                          text=True, timeout=NODE_TIMEOUT)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["CHUNK"] == CHUNK
    assert out["calls"] == [[CHUNK, "7"], [CHUNK, str(7 + CHUNK)], [5, str(7 + 2 * CHUNK)]]
    assert out["words"] == 2 * CHUNK + 5 and out["last"] == str(7 + 2 * CHUNK + 4)


def test_the_web_sampler_batches_a_sequence_model_as_zoo_sampling_does() -> None:
    """A sequence model's batches are CHUNK halved until the state fits STATE_BYTES, in both
    samplers (an int8 step graph's words depend on its batches)."""
    floats = [1, 64, 8192, 8193, 3 * 8192, 2**20, 2**26]
    sampler = (Path(web.__file__).parent / "sampler.mjs").as_uri()
    script = (f"import {{ STATE_BYTES, stepChunk }} from {json.dumps(sampler)};"
              f"console.log(JSON.stringify({{ STATE_BYTES, rows: {json.dumps(floats)}"
              ".map(stepChunk) }));")
    done = subprocess.run([node(), "--input-type=module", "-e", script], capture_output=True,
                          text=True, timeout=NODE_TIMEOUT)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["STATE_BYTES"] == zoo.sampling.STATE_BYTES

    class Shaped:  # a stepper's start(1): one cache of that many floats a word
        def __init__(self, n: int) -> None:
            self.n = n

        def start(self, rows: int) -> list[np.ndarray]:
            return [np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (self.n, rows),
                                                    (0, 0))]

    assert out["rows"] == [zoo.sampling.step_chunk(Shaped(n)) for n in floats]
    assert out["rows"][0] == CHUNK and out["rows"][3] < out["rows"][2] and out["rows"][-1] == 1


def test_node_words_are_index_stable(site) -> None:
    folder = site("mlp-bn")
    ten = node_words(folder, ["-n", "10", "--seed", "5"])
    assert node_words(folder, ["-n", "5", "--seed", "5"]) == ten[:5]
    assert node_words(folder, ["-n", "5", "--seed", "5", "--start", "5"]) == ten[5:]
    assert node_words(folder, ["-n", "10", "--seed", "6"]) != ten
    assert node_words(folder, ["-n", "0"]) == []


@pytest.mark.parametrize("args, fragment", SAMPLING_REFUSED)
def test_node_sampler_bad_options_one_line(args: list[str], fragment: str, site) -> None:
    done = subprocess.run([node(), str(site("mlp-bn") / "sample.mjs"), *args],
                          capture_output=True, text=True, timeout=NODE_TIMEOUT)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert fragment in done.stderr


def test_node_stops_when_its_reader_goes_away(site) -> None:
    """`node sample.mjs -n 1000000000000 | head -3`: it stops at once, quietly."""
    proc = subprocess.Popen([node(), str(site("mlp-bn") / "sample.mjs"), "-n", str(10**12)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()
    assert all(line.endswith(b"\n") for line in lines)
    assert proc.wait(timeout=NODE_TIMEOUT) == 0 and proc.stderr.read() == b""


def _edit(card: dict, **fields) -> dict:
    return {**card, **fields}


TAMPERED = [  # model.json edited by hand: each is one line naming it, before any model runs
    ("duplicate-symbols", lambda c: _edit(c, vocab=[*c["vocab"][:2], *c["vocab"][1:]]),
     "model.json: vocab must be '.' followed by distinct single characters"),
    ("two-character-symbol", lambda c: _edit(c, vocab=[".", "ab", *c["vocab"][2:]]),
     "model.json: vocab must be '.' followed by distinct single characters"),
    ("path-out-of-the-site", lambda c: _edit(c, model="../model.onnx"),
     'model.json: model must be the name of a file in the site folder, got "../model.onnx"'),
    ("url", lambda c: _edit(c, model="https://example.com/m.onnx"),
     "model.json: model must be the name of a file in the site folder"),
    ("huge-context", lambda c: _edit(c, context=100_000_000),
     "model.json: context must be an integer from 1 to 4096, got 100000000"),
    ("other-context", lambda c: _edit(c, context=c["context"] + 1),
     "is not the model's"),
    ("no-sha256", lambda c: {k: v for k, v in c.items() if k != "sha256"},
     "model.json: sha256 must be the model file's sha256"),
    ("other-model", lambda c: _edit(c, sha256="0" * 64),
     "model.onnx is not the model model.json describes"),
    ("not-an-object", lambda c: [c], "model.json: not an object"),
]


@pytest.mark.parametrize("name, tamper, fragment", TAMPERED, ids=[t[0] for t in TAMPERED])
def test_node_refuses_a_tampered_model_json(name: str, tamper, fragment: str, site,
                                            tmp_path: Path) -> None:
    folder = tmp_path / "site"
    shutil.copytree(site("mlp-bn"), folder)
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    (folder / "model.json").write_text(json.dumps(tamper(card)), encoding="utf-8")
    done = subprocess.run([node(), str(folder / "sample.mjs"), "-n", "3"], capture_output=True,
                          text=True, timeout=NODE_TIMEOUT)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert fragment in done.stderr


def test_folder_has_page_model_sidecar_and_wasm(site, exported: Exported) -> None:
    run_dir, path = exported("mlp-bn")
    folder = site("mlp-bn")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ("model.onnx", "model.json", *PAGE_FILES, *ORT_FILES))
    assert (folder / "model.onnx").read_bytes() == path.read_bytes()
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    model = OnnxModel.load(path)
    assert card["vocab"] == list(model.vocab) and card["context"] == model.context
    assert card["spec"] == model.spec and card["metrics"] == model.metrics
    assert card["quantized"] is None and card["model"] == "model.onnx"
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    run_meta = json.loads((run_dir / "meta.json").read_text())
    assert card["metrics"] == run_meta["metrics"]
    assert card["parameters"] > 0 and f"{card['parameters']:,}" in card["summary"]
    html = (folder / "index.html").read_text(encoding="utf-8")
    for field in ('id="n"', 'id="seed"', 'id="temperature"', 'id="top-k"', 'id="prefix"'):
        assert field in html
    # offline: nothing but the folder's own files is ever requested
    for name in ("index.html", *[n for n in PAGE_FILES if n.endswith(".mjs")]):
        text = (folder / name).read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "cdn" not in text.lower()


def test_server_serves_modules_and_wasm_with_browser_types(site) -> None:
    folder = site("mlp-bn")
    with server(folder, port=0) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            host, port = httpd.server_address[:2]
            assert host == "127.0.0.1"
            base = f"http://127.0.0.1:{port}/"
            types = {}
            for name in ("", "page.mjs", "ort-wasm-simd-threaded.wasm", "model.json"):
                with urllib.request.urlopen(base + name, timeout=30) as response:
                    types[name] = response.headers["Content-Type"]
                    body = response.read()
                assert body == (folder / (name or "index.html")).read_bytes()
        finally:
            httpd.shutdown()
            thread.join()
    assert types[""].startswith("text/html") and types["page.mjs"] == "text/javascript"
    assert types["ort-wasm-simd-threaded.wasm"] == "application/wasm"


def test_server_serves_its_own_files_only_and_quietly(site, tmp_path: Path, capfd) -> None:
    folder = tmp_path / "site"
    shutil.copytree(site("mlp-bn"), folder)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret", encoding="utf-8")
    (folder / "fs").symlink_to(outside)
    (folder / "link.txt").symlink_to(outside / "secret.txt")
    (folder / ".env").write_text("TOKEN=1", encoding="utf-8")
    (folder / "sub").mkdir()
    (folder / "sub" / "a.txt").write_text("a", encoding="utf-8")
    refused = ["/fs/secret.txt", "/fs/", "/link.txt", "/.env", "/%2eenv", "/sub/", "/sub/a.txt",
               "/model.json%00.html", "/../outside/secret.txt", "/%2e%2e/outside/secret.txt",
               "//etc/hostname", "/nothing.js"]
    with server(folder, port=0) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            port = httpd.server_address[1]
            for path in refused:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                connection.close()
                assert response.status == 404, path
                assert b"secret" not in body and b"TOKEN" not in body, path
            before = threading.active_count()
            for _ in range(3):  # a client that drops a download half way (a tab closed)
                with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
                    client.sendall(b"GET /ort-wasm-simd-threaded.wasm HTTP/1.1\r\n"
                                   b"Host: x\r\n\r\n")
                    client.recv(1024)
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))  # close with a reset
            deadline = time.monotonic() + 30
            while threading.active_count() > before and time.monotonic() < deadline:
                time.sleep(0.05)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/model.json?v=1",
                                        timeout=30) as response:
                assert response.read() == (folder / "model.json").read_bytes()
        finally:
            httpd.shutdown()
            thread.join()
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_cli_writes_folder_and_says_how_to_use_it(cli, exported: Exported,
                                                  tmp_path: Path) -> None:
    _, path = exported("mlp-bn")
    (tmp_path / "empty").mkdir()
    result = cli("web", str(path), "-o", str(tmp_path / "empty"))
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'empty'}/" in result.stdout and "sample.mjs" in result.stdout
    assert (tmp_path / "empty" / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no staging left behind


def test_web_fills_an_empty_folder_that_exists_in_place(cli, exported: Exported,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o .` in an empty folder, or a link to one: the folder stays (a shell inside it keeps
    its folder) and gets the page; nothing is left beside it."""
    _, path = exported("mlp-bn")
    here, real = tmp_path / "here", tmp_path / "real"
    here.mkdir()
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(here)
    inode = here.stat().st_ino
    for out, folder in ((".", here), (str(tmp_path / "link"), real)):
        result = cli("web", str(path), "-o", out)
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ("model.onnx", "model.json", *PAGE_FILES, *ORT_FILES))
    assert here.stat().st_ino == inode and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "link", "real"]


def test_cli_serve_prints_the_url_and_serves_the_folder(site) -> None:
    folder = site("mlp-bn")
    zoo = Path(sys.executable).parent / "zoo"
    with subprocess.Popen([str(zoo), "web", "--serve", "-o", str(folder), "--port", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline()
            assert line.startswith(f"serving {folder} at http://127.0.0.1:"), line
            url = line.split(" at ")[1].split()[0]
            with urllib.request.urlopen(url + "model.json", timeout=30) as response:
                assert json.loads(response.read())["model"] == "model.onnx"
        finally:
            proc.terminate()


# -- bad input: one line, exit 2, nothing written ---------------------------------------------

def _foreign_onnx(folder: Path) -> Path:
    """A valid ONNX file with the right signature but no layerzoo metadata."""
    x = onnx.helper.make_tensor_value_info("context", onnx.TensorProto.INT64, ["batch", 3])
    y = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Cast", ["context"], ["logits"],
                                                          to=onnx.TensorProto.FLOAT)],
                                   "g", [x], [y])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    proto.ir_version = 10
    onnx.save(proto, folder / "foreign.onnx")
    return folder / "foreign.onnx"


def test_bad_input_is_one_line_exit_2_nothing_written(cli, exported: Exported,
                                                      tmp_path: Path) -> None:
    run_dir, path = exported("mlp-bn")
    foreign = _foreign_onnx(tmp_path)
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine\n")
    empty_ort = tmp_path / "ort"
    empty_ort.mkdir()
    out = str(tmp_path / "site")
    cases = [
        (["web", str(foreign), "-o", out], {}, [f"{foreign} has no layerzoo metadata"]),
        (["web", str(run_dir), "-o", out], {},
         [f"{run_dir} is a directory", f"zoo export {run_dir}"]),
        (["web", str(path), "-o", str(full)], {}, [f"{full} is not empty"]),
        (["web", str(path), "-o", out], {ORT_ENV: str(empty_ort)},
         ["onnxruntime-web's wasm files are missing", str(empty_ort), "npm ci"]),
        (["web", str(path), "-o", out, "--ort-dir", str(empty_ort)], {},
         ["wasm files are missing", "npm ci"]),
        (["web", "--serve", "-o", str(full)], {}, [f"{full} is not a `zoo web` folder"]),
        (["web", str(tmp_path / "nope.onnx"), "-o", out], {}, ["no such ONNX file"]),
    ]
    before, run_before = snapshot(tmp_path), snapshot(run_dir)
    for args, env, fragments in cases:
        result = cli(*args, env=env)
        assert_clean_error(result, *fragments)
        assert result.stdout == ""
        assert snapshot(tmp_path) == before, args
        assert not (tmp_path / "site").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.onnx", "full", "ort"]
    assert snapshot(run_dir) == run_before


def test_missing_wasm_files_name_the_command(monkeypatch: pytest.MonkeyPatch, exported: Exported,
                                             tmp_path: Path) -> None:
    """With no override and no node_modules anywhere, the message names `npm ci`."""
    import zoo.export.web as web

    monkeypatch.delenv(ORT_ENV, raising=False)
    monkeypatch.setattr(web, "ORT_SUBDIR", Path("no-such-node_modules") / "onnxruntime-web")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(web.ArtifactError, match="npm ci"):
        build_site(exported("mlp-bn")[1], tmp_path / "site")
    assert list(tmp_path.iterdir()) == []


def test_the_version_named_to_wheel_users_is_the_pinned_and_installed_one() -> None:
    """ORT_VERSION (named in `zoo web`'s hint to a wheel user, who has no package.json) is the
    version package.json pins, package-lock.json resolves and npm ci installed: the one the page
    is tested with and a wheel ships."""
    root = Path(__file__).resolve().parents[1]
    pinned = json.loads((root / "package.json").read_text())["dependencies"]["onnxruntime-web"]
    lock = json.loads((root / "package-lock.json").read_text())["packages"]
    installed = json.loads((root / ORT_SUBDIR.parent / "package.json").read_text())["version"]
    assert ORT_VERSION == pinned == lock["node_modules/onnxruntime-web"]["version"] == installed
    assert lock[""]["dependencies"]["onnxruntime-web"] == pinned
