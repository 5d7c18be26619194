"""The web page in a real browser: Debian's headless Chromium, driven by selenium, loads the
page of a running g2lstm-serve, translates a sentence with two models side by side, and
shows the translations and the gate heatmaps: per token the mean over the units and the
shares of units below 0.1 and above 0.9, and a units x tokens picture of the layer.

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
                # one column per source token (4 words and </s>); rows per gate and direction:
                # the mean, the share of units below 0.1 and the share above 0.9
                source_heads = [th.text for th in source.find_elements(By.CSS_SELECTOR, "thead th")][1:]
                assert len(source_heads) == 5 and source_heads[-1] == "</s>"
                assert [th.text for th in source.find_elements(By.CSS_SELECTOR, "tbody th")] == [
                    f"{gate}{direction}{share}" for direction in ("", " (reverse)") for gate in ("input", "forget")
                    for share in ("", " < 0.1", " > 0.9")]
                target_heads = [th.text for th in target.find_elements(By.CSS_SELECTOR, "thead th")][1:]
                assert target_heads[0] == "<s>" and len(target_heads) == len(expected.split()) + 1
                rows = target.find_elements(By.CSS_SELECTOR, "tbody tr")
                assert [row.get_attribute("class") for row in rows] == ["mean", "share below", "share above"] * 2
                values = [[float(cell.get_attribute("data-value")) for cell in row.find_elements(By.CSS_SELECTOR, "td")]
                          for row in rows]
                assert all(len(row) == len(target_heads) for row in values)
                assert all(0 < v < 1 for row in (values[0], values[3]) for v in row)  # means
                assert all(0 <= v <= 1 for row in values for v in row)
                for below, above in ((values[1], values[2]), (values[4], values[5])):
                    assert all(b + a <= 1 for b, a in zip(below, above))
                cells = target.find_elements(By.CSS_SELECTOR, "tbody td")
                assert all(cell.value_of_css_property("background-color").startswith("rgb") for cell in cells)
                for side, columns in (("source", 5), ("target", len(target_heads))):
                    for gate in ("input", "forget"):
                        canvas = result.find_element(By.CSS_SELECTOR, f"canvas.units.{side}.{gate}")
                        assert canvas.get_attribute("data-units") == "64"  # H 64: every unit, sorted
                        assert canvas.get_attribute("data-tokens") == str(columns)
                        colours = driver.execute_script(
                            "const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                            "const seen = new Set(); for (let k = 0; k < d.length; k += 4) seen.add(d[k] + ',' + "
                            "d[k + 1] + ',' + d[k + 2] + ',' + d[k + 3]); return seen.size;", canvas)
                        assert colours > 4  # units differ: not a blank or one-colour picture
            assert driver.find_element(By.ID, "status").text == ""
            driver.set_window_size(1280, 1800)
            driver.save_screenshot(str(tmp_path / "page.png"))
            assert (tmp_path / "page.png").stat().st_size > 10_000
            shutil.copyfile(tmp_path / "page.png", os.environ.get("G2LSTM_PAGE_SCREENSHOT", tmp_path / "copy.png"))
        finally:
            driver.quit()
