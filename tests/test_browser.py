"""The web page in a real browser: Debian's headless Chromium, driven by selenium, loads the
page of a running g2lstm-serve, translates a sentence with two models side by side, and
shows the translations and the gate heatmaps.

Skipped, loudly, where Chromium or chromedriver is missing; with
G2LSTM_REQUIRE_BROWSER=1 (CI sets it) that is a failure instead."""
import os
import shutil
import warnings

import pytest

from served_model import interactive, running_server, served_model

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1000"]


def browser_or_skip(user_data_dir):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        reason = (f"NO BROWSER TEST: {' and '.join(missing)} missing (apt-get install chromium chromium-driver, "
                  "or `make browser`)")
        if os.environ.get("G2LSTM_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + "; G2LSTM_REQUIRE_BROWSER=1 requires it")
        warnings.warn(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={user_data_dir}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_the_page_translates_and_draws_the_gate_heatmaps(tmp_path_factory, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    model = served_model(tmp_path_factory)
    second = tmp_path / "second-de-en"
    shutil.copytree(model["folder"], second)
    sentence = "w1 w2 w3 w4"
    expected = interactive(model["folder"], [sentence])[0]
    with running_server(model["folder"], second) as server:
        driver = browser_or_skip(tmp_path / "chromium-profile")
        try:
            driver.get(server.url + "/")
            wait = WebDriverWait(driver, 60)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 2)
            assert driver.title == "G2-LSTM translation"
            Select(driver.find_element(By.ID, "compare")).select_by_value("second-de-en")
            driver.find_element(By.ID, "source").send_keys(sentence)
            driver.find_element(By.ID, "translate").click()
            wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".result table.heatmap.target")))
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result")) == 2)
            results = driver.find_elements(By.CSS_SELECTOR, ".result")
            assert [r.get_attribute("data-model") for r in results] == ["reverse-de-en", "second-de-en"]
            for result in results:
                assert result.find_element(By.CSS_SELECTOR, ".translation").text == expected
                source = result.find_element(By.CSS_SELECTOR, "table.heatmap.source")
                target = result.find_element(By.CSS_SELECTOR, "table.heatmap.target")
                # one column per source token (4 words and </s>); rows: input, forget, both directions
                source_heads = [th.text for th in source.find_elements(By.CSS_SELECTOR, "thead th")][1:]
                assert len(source_heads) == 5 and source_heads[-1] == "</s>"
                assert [th.text for th in source.find_elements(By.CSS_SELECTOR, "tbody th")] == [
                    "input", "forget", "input (reverse)", "forget (reverse)"]
                target_heads = [th.text for th in target.find_elements(By.CSS_SELECTOR, "thead th")][1:]
                assert target_heads[0] == "<s>" and len(target_heads) == len(expected.split()) + 1
                cells = target.find_elements(By.CSS_SELECTOR, "tbody td")
                assert len(cells) == 2 * len(target_heads)
                values = [float(cell.get_attribute("data-value")) for cell in cells]
                assert all(0 < v < 1 for v in values)
                assert all(cell.value_of_css_property("background-color").startswith("rgb") for cell in cells)
            assert driver.find_element(By.ID, "status").text == ""
            driver.save_screenshot(str(tmp_path / "page.png"))
            assert (tmp_path / "page.png").stat().st_size > 10_000
        finally:
            driver.quit()
