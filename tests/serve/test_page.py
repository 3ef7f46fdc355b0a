"""The page at ``/`` in a real browser (Debian's headless Chromium through Selenium and
chromium-driver): a photo uploaded, its boxes drawn equal to what the API answers for it, the
score slider filtering without a new request; a screenshot kept as a test artifact
(``$EFFICIENTDET_TEST_ARTIFACTS``, default ``test-artifacts/`` in the checkout)."""

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_builders import live_server

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="Debian's chromium and chromium-driver are not installed here (apt-get install chromium "
           "chromium-driver; .ci/run installs them)")
httpx = pytest.importorskip("httpx", reason="the test extra's httpx is not installed")
pytest.importorskip("selenium", reason="the test extra's selenium is not installed")
skimage_data = pytest.importorskip("skimage.data", reason="the test extra's scikit-image is not installed")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from efficientdet.serve.app import create_app  # noqa: E402

ARTIFACTS = Path(os.environ.get("EFFICIENTDET_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
SCREENSHOT_THRESHOLD = 0.9


@contextlib.contextmanager
def chromium(profile: Path):
    """Headless Chromium with the flags this closed network needs (no background connections)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,960", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def assert_same_detections(shown: list[dict], answered: list[dict]) -> None:
    assert [(d["name"], d["label"]) for d in shown] == [(d["name"], d["label"]) for d in answered]
    np.testing.assert_allclose([d["box"] for d in shown], [d["box"] for d in answered], atol=0.011)
    np.testing.assert_allclose([d["score"] for d in shown], [d["score"] for d in answered], atol=1e-4)


def detect_requests(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    families = text_string_to_metric_families(httpx.get(url + "/metrics").text)
    return sum(s.value for f in families for s in f.samples
               if s.name == "efficientdet_requests_total" and s.labels["endpoint"] == "/v1/detect")


def set_slider(driver, value: float) -> None:
    driver.execute_script("const s = document.getElementById('threshold'); s.value = arguments[0];"
                          "s.dispatchEvent(new Event('input'));", str(value))


def test_the_page_draws_what_the_api_answers(detector, tmp_path):
    photo = tmp_path / "chelsea.jpg"
    Image.fromarray(skimage_data.chelsea()).save(photo, quality=90)
    app = create_app(detector, max_batch_size=2, weights="random (scores spread)")
    with live_server(app) as url, chromium(tmp_path / "profile") as driver:
        wait = WebDriverWait(driver, 120, poll_frequency=0.1)
        wait.until(lambda _: httpx.get(url + "/readyz").status_code == 200)
        driver.get(url + "/")
        wait.until(lambda d: "efficientdet-lite0" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "files").send_keys(str(photo))
        card = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".result:not([data-state='pending'])"))
        assert card.get_attribute("data-state") == "done", card.text
        canvas = card.find_element(By.TAG_NAME, "canvas")
        assert (int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))) == (451, 300)

        answered = httpx.post(url + "/v1/detect", files={"image": ("chelsea.jpg", photo.read_bytes(), "image/jpeg")},
                              timeout=60).json()["detections"]
        shown = json.loads(card.find_element(By.CSS_SELECTOR, "pre.json").get_attribute("textContent"))
        assert_same_detections(shown["detections"], answered)
        drawn = json.loads(canvas.get_attribute("data-drawn"))
        assert drawn and len(drawn) < len(answered)  # the slider's default (0.4) leaves some out
        assert_same_detections(drawn, [d for d in answered if d["score"] >= 0.4])

        requests = detect_requests(url)
        for threshold in (0.9, 0.0, SCREENSHOT_THRESHOLD):
            set_slider(driver, threshold)
            drawn = json.loads(canvas.get_attribute("data-drawn"))
            assert_same_detections(drawn, [d for d in answered if d["score"] >= threshold])
        assert detect_requests(url) == requests  # filtered in the page: no new request
        assert f"{len(drawn)} of {len(answered)} detections drawn" in card.text and "ms round trip" in card.text

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "serve-page.png"))
