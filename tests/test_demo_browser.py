"""The web demo in a real browser: Debian's headless Chromium, driven by selenium through the system chromedriver.

The app runs as a user starts it (`python -m llava.demo --config CFG --model TINY`, a separate process) on a tiny
random checkpoint; the page is driven as a user drives it: upload a generated clip, type questions, press Run, read
the answers, the token counts and the pictures off the page. The counts and the answer must equal the command
line's (`python -m llava.infer --json`) for the same settings.

Skips, with the reason, when Chromium, chromedriver, selenium or gradio is missing, unless LLAVA_REQUIRE_BROWSER=1
(CI installs them and sets it): then they fail. LLAVA_DEMO_SCREENSHOTS=DIR saves the page of each test as a PNG
there (docs/images/ holds the ones docs/demo.md shows).
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llava.demo_clip import make_demo_clip

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# this closed network refuses Chromium's background connections: without these flags it stalls on them
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1700")
MAX_NEW_TOKENS = 8
FRAMES = 8
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 120


def _missing() -> list[str]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    return missing + [m for m in ("selenium", "gradio") if importlib.util.find_spec(m) is None]


if _missing():
    _reason = (f"the browser test needs {', '.join(_missing())} (apt-get install -y chromium chromium-driver; "
               "the package's demo extra)")
    if os.environ.get("LLAVA_REQUIRE_BROWSER") == "1":
        pytest.fail(_reason + " and LLAVA_REQUIRE_BROWSER=1 is set", pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

from selenium import webdriver  # noqa: E402  (only once we know it is installed)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


# ---- the app, the CLI and the browser -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped default config with short answers and few frames, so one run takes seconds."""
    path = tmp_path_factory.mktemp("demo") / "demo.yaml"
    path.write_text(f"video:\n  frames: {FRAMES}\ncompression:\n  method: scc\n  retention_ratio: 0.1\n"
                    f"generation:\n  max_new_tokens: {MAX_NEW_TOKENS}\n")
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_clip(tmp_path_factory.mktemp("clip") / "moving.mp4", num_frames=24)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the demo exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the demo did not answer at {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def app_url(tiny_original_dir: Path, run_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llava.demo` on the tiny checkpoint, as demo.sh starts it; stopped after the module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("demo_log") / "app.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "llava.demo", "--config", str(run_config), "--model",
                                    str(tiny_original_dir), "--device", "cpu", "--port", str(port)],
                                   cwd=tempfile.gettempdir(), env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def cli_report(tiny: Path, config: Path, video: Path, questions: list[str], *flags: str) -> dict:
    """The command line's JSON report for the same run config, checkpoint and flags."""
    args = [sys.executable, "-m", "llava.infer", "--json", "--config", str(config), "--model", str(tiny),
            "--device", "cpu", "--video", str(video), *flags]
    for question in questions:
        args += ["--question", question]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ---- driving the page ----------------------------------------------------------------------------------------
def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#run"))


def upload(driver: WebDriver, path: Path) -> None:
    """Send a file to the video box, as choosing it in the file dialog does, and wait until it is uploaded."""
    driver.find_element(By.CSS_SELECTOR, "#video input[type=file]").send_keys(str(path))
    WebDriverWait(driver, 60).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#video input[type=file]")
                                    or d.find_elements(By.CSS_SELECTOR, "#video video"))


def type_into(driver: WebDriver, selector: str, text: str) -> None:
    box = driver.find_element(By.CSS_SELECTOR, selector)
    box.clear()
    box.send_keys(text)


def choose(driver: WebDriver, label: str, method: str, kind: str, value: str) -> None:
    """Set one setting's method (Gradio's dropdown is an input with a list), budget kind and value."""
    driver.find_element(By.CSS_SELECTOR, f"#method-{label} input").click()
    option = f"#method-{label} li[role=option][aria-label='{method}']"
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, option))[0].click()
    driver.find_element(By.XPATH, f"//*[@id='kind-{label}']//label[contains(., '{kind}')]").click()
    type_into(driver, f"#value-{label} input", value)


def press_run(driver: WebDriver) -> str:
    """Press Run and wait until the status line says done or error; returns its stage."""
    previous = driver.find_element(By.CSS_SELECTOR, "#status").get_attribute("innerHTML")
    driver.find_element(By.CSS_SELECTOR, "#run").click()
    return wait_finished(driver, previous)


def wait_finished(driver: WebDriver, previous: str = "") -> str:
    def finished(d: WebDriver) -> str | bool:
        status = d.find_elements(By.CSS_SELECTOR, "#status .demo-status")
        if not status or d.find_element(By.CSS_SELECTOR, "#status").get_attribute("innerHTML") == previous:
            return False
        stage = status[0].get_attribute("data-stage")
        return stage if stage in ("done", "error") else False

    return WebDriverWait(driver, RUN_TIMEOUT_S, poll_frequency=0.3).until(finished)


def field(driver: WebDriver, label: str, name: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"#report-{label} [data-field={name}]").text.strip()


def answers(driver: WebDriver, label: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"#answers-{label} textarea").get_attribute("value")


def status_text(driver: WebDriver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "#status").text


def picture_sizes(driver: WebDriver, label: str) -> list[tuple[int, int]]:
    images = WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#pictures-{label} img"))
    WebDriverWait(driver, 30).until(lambda d: all(d.execute_script("return arguments[0].complete", i) for i in images))
    return [tuple(driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", i))
            for i in images]


def screenshot(driver: WebDriver, name: str) -> None:
    folder = os.environ.get("LLAVA_DEMO_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def expected_answer(text: str) -> str:
    """The page's textarea holds 'Q: ...\\nA: answer'; the browser normalises line breaks to \\n."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ---- tests ---------------------------------------------------------------------------------------------------
def test_answer_counts_and_pictures_match_the_command_line(browser: WebDriver, app_url: str, clip: Path,
                                                           tiny_original_dir: Path, run_config: Path) -> None:
    open_page(browser, app_url)
    upload(browser, clip)
    type_into(browser, "#questions textarea", "What moves?\nWhere is the red disc?")
    assert press_run(browser) == "done", status_text(browser)
    report = cli_report(tiny_original_dir, run_config, clip, ["What moves?", "Where is the red disc?"])
    assert int(field(browser, "A", "tokens_before")) == report["tokens_before"] == FRAMES * report["tokens_per_frame"]
    assert int(field(browser, "A", "tokens_after")) == report["tokens_after"]
    assert field(browser, "A", "setting") == "scc, retention ratio 0.1"
    shown = answers(browser, "A")
    for item in report["answers"]:
        assert f"Q: {item['question']}\nA: {expected_answer(item['answer'])}" in shown
    sizes = picture_sizes(browser, "A")
    assert len(sizes) == FRAMES and all(w > 0 and h > 0 for w, h in sizes), sizes
    assert browser.find_element(By.CSS_SELECTOR, "#shared [data-field=frames]").text == str(FRAMES)
    screenshot(browser, "demo-single")


def test_non_video_upload_shows_the_error_and_the_next_request_works(browser: WebDriver, app_url: str, clip: Path,
                                                                    tmp_path: Path) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("these are notes, not a video\n")
    open_page(browser, app_url)
    upload(browser, notes)
    assert press_run(browser) == "error"
    assert "Video:" in status_text(browser) and "notes" in status_text(browser)
    screenshot(browser, "demo-error")
    open_page(browser, app_url)
    upload(browser, clip)
    assert press_run(browser) == "done", status_text(browser)
    assert int(field(browser, "A", "tokens_after")) > 0


def test_a_tau_for_a_method_without_tau_is_named_in_the_page(browser: WebDriver, app_url: str, clip: Path) -> None:
    open_page(browser, app_url)
    upload(browser, clip)
    choose(browser, "A", "uniform", "tau", "0.9")
    assert press_run(browser) == "error"
    message = status_text(browser)  # CompressionConfig's own words, after the setting's name
    assert message.startswith("Error: Setting A: compression.method 'uniform'") and "tau=0.9" in message, message


def test_two_settings_side_by_side_give_their_own_counts(browser: WebDriver, app_url: str, clip: Path,
                                                         tiny_original_dir: Path, run_config: Path) -> None:
    open_page(browser, app_url)
    upload(browser, clip)
    type_into(browser, "#questions textarea", "What moves?")
    browser.find_element(By.CSS_SELECTOR, "#compare input").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, "#method-B").is_displayed())
    choose(browser, "B", "uniform", "retention ratio", "0.25")
    assert press_run(browser) == "done", status_text(browser)
    for label, flags in (("A", ()), ("B", ("--method", "uniform", "--retention-ratio", "0.25"))):
        report = cli_report(tiny_original_dir, run_config, clip, ["What moves?"], *flags)
        assert int(field(browser, label, "tokens_after")) == report["tokens_after"], label
        assert f"A: {expected_answer(report['answers'][0]['answer'])}" in answers(browser, label)
        assert len(picture_sizes(browser, label)) == FRAMES
    assert field(browser, "A", "tokens_after") != field(browser, "B", "tokens_after")
    screenshot(browser, "demo-compare")


def test_two_sessions_at_once_get_their_own_answers(browser: WebDriver, app_url: str, clip: Path) -> None:
    open_page(browser, app_url)
    first = browser.current_window_handle
    upload(browser, clip)
    type_into(browser, "#questions textarea", "First session?")
    browser.switch_to.new_window("tab")
    second = browser.current_window_handle
    open_page(browser, app_url)
    upload(browser, clip)
    type_into(browser, "#questions textarea", "Second session?")
    type_into(browser, "#value-A input", "0.5")
    for handle in (first, second):  # both pressed before either finishes: the second waits in the queue
        browser.switch_to.window(handle)
        browser.find_element(By.CSS_SELECTOR, "#run").click()
    seen = {}
    for handle, question, ratio in ((first, "First session?", 0.1), (second, "Second session?", 0.5)):
        browser.switch_to.window(handle)
        assert wait_finished(browser) == "done", status_text(browser)
        assert f"Q: {question}" in answers(browser, "A") and "session?" in answers(browser, "A")
        seen[question] = int(field(browser, "A", "tokens_after"))
        assert seen[question] == max(1, round(ratio * int(field(browser, "A", "tokens_before")))), seen
    assert "First" not in answers(browser, "A")  # the second tab, still selected, shows only its own question
    browser.close()
    browser.switch_to.window(first)
