"""The `zoo web` page in headless Chromium: fill in the form, read the names from the page, and
compare them with ``zoo sample``; the card shows the model; a screenshot is saved.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and selenium
(a test dependency); skips with the reason where they are missing. The screenshot goes to
``$LAYERZOO_SCREENSHOT`` if set (how docs/web-page.png was made), else into the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zoo.export.web import server

pytest_plugins = ["websites"]  # the `site` fixture
pytestmark = pytest.mark.slow  # a browser: seconds to start, tens to load the wasm
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# the flags that run Chromium here: root, no GPU, and no background connections to Google,
# which this machine's closed network would refuse again and again
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1100,960")
WAIT_S = 90  # loading compiles 14 MB of wasm: seconds on a loaded machine

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(f"no Chromium: {CHROMIUM} and {CHROMEDRIVER} are needed "
                "(apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="layerzoo-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: webdriver.Chrome) -> Callable[[Path], webdriver.Chrome]:
    """``page(folder)``: serve the folder on 127.0.0.1 and open it once the model is loaded."""
    servers = []

    def open_page(folder: Path) -> webdriver.Chrome:
        httpd = server(folder, port=0)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        browser.get(f"http://127.0.0.1:{httpd.server_address[1]}/")
        assert wait_state(browser, "ready", "error") == "ready", status(browser)
        return browser

    yield open_page
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def status(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "status").text


def wait_state(driver: webdriver.Chrome, *states: str) -> str:
    body = driver.find_element(By.TAG_NAME, "body")
    WebDriverWait(driver, WAIT_S).until(lambda d: body.get_attribute("data-state") in states)
    return body.get_attribute("data-state")


def sample_in_page(driver: webdriver.Chrome, **fields: str) -> tuple[str, list[str]]:
    """Fill in the form (unnamed fields keep their value), submit, and read the names."""
    for name, value in fields.items():
        box = driver.find_element(By.ID, name.replace("_", "-"))
        box.clear()
        box.send_keys(value)
    driver.find_element(By.ID, "sample").click()
    state = wait_state(driver, "done", "error")
    names = [li.get_attribute("textContent")
             for li in driver.find_elements(By.CSS_SELECTOR, "#names li")]
    return state, names


def zoo_words(cli, model: Path, *args: str) -> list[str]:
    result = cli("sample", str(model), *args)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_page_shows_the_words_of_zoo_sample(page, site, cli, tmp_path: Path) -> None:
    folder = site("mlp-bn")
    driver = page(folder)
    model = folder / "model.onnx"
    state, names = sample_in_page(driver, n="25", seed="0")
    assert state == "done" and names == zoo_words(cli, model, "-n", "25", "--seed", "0")
    screenshot = Path(os.environ.get("LAYERZOO_SCREENSHOT") or tmp_path / "web-page.png")
    assert driver.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    state, names = sample_in_page(driver, n="30", seed="12345678901234567890",
                                  temperature="0.7", top_k="5", prefix="ja")
    assert state == "done" and len(names) == 30
    assert names == zoo_words(cli, model, "-n", "30", "--seed", "12345678901234567890",
                              "--temperature", "0.7", "--top-k", "5", "--prefix", "ja")
    assert all(name.startswith("ja") for name in names)
    assert status(driver) == "30 names in " + status(driver).split(" in ")[1]


def test_page_card_and_bad_prefix(page, site) -> None:
    folder = site("mlp-bn")
    driver = page(folder)
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    facts = driver.find_element(By.ID, "facts").text
    assert f"{card['parameters']:,}" in facts and "float32" in facts
    assert f"{card['metrics']['val_loss']:.4f}" in facts
    assert driver.find_element(By.ID, "summary").text.strip() == card["summary"].strip()
    assert card["spec"]["description"] in driver.find_element(By.ID, "description").text
    state, names = sample_in_page(driver, prefix="Q!")
    assert state == "error" and names == []
    assert "outside the model's vocabulary" in status(driver)


def test_page_int8_model_matches_zoo_sample(page, site, cli) -> None:
    folder = site("wavenet", int8=True)
    driver = page(folder)
    assert "quantised (int8-dynamic)" in driver.find_element(By.ID, "facts").text
    state, names = sample_in_page(driver, n="20", seed="4", prefix="")
    assert state == "done"
    assert names == zoo_words(cli, folder / "model.onnx", "-n", "20", "--seed", "4")


def test_page_steps_a_sequence_model_as_zoo_sample_does(page, site, cli) -> None:
    folder = site("seq-transformer")
    assert json.loads((folder / "model.json").read_text(encoding="utf-8"))["format"] == "2"
    driver = page(folder)
    state, names = sample_in_page(driver, n="20", seed="9", prefix="a")
    assert state == "done" and all(name.startswith("a") for name in names)
    assert names == zoo_words(cli, folder / "model.onnx", "-n", "20", "--seed", "9",
                              "--prefix", "a")
