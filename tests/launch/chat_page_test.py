#!/usr/bin/python3
"""The chat page of `gemmapod serve` in a real headless browser (Debian's chromium and
chromedriver through python3-selenium): the page loads, shows the served model, and a two-turn
conversation typed into it streams the same answers the API gives for the same messages.

    tests/launch/chat_page_test.py build/gemmapod
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def post(port, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())["choices"][0]["message"]["content"]


def start_server(gemmapod, model, log_path):
    log = open(log_path, "w")
    server = subprocess.Popen([gemmapod, "serve", "--model", model, "--port", "0",
                               "--model-name", "tiny"], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        text = open(log_path).read()
        if "serve: ready" in text:
            return server, int(re.search(r"listening on http://[0-9.]+:([0-9]+)", text).group(1))
        if server.poll() is not None:
            break
        time.sleep(0.1)
    server.kill()
    sys.exit(f"the server did not start:\n{open(log_path).read()}")


def main():
    gemmapod = sys.argv[1]
    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: tools/install_deps.sh installs chromium and chromium-driver")
    work = tempfile.mkdtemp(prefix="chat-page-")
    model = os.path.join(work, "tiny.h5")
    subprocess.run([gemmapod, "convert", "tests/fixtures/models/gemma3", model], check=True,
                   stdout=subprocess.DEVNULL)
    server, port = start_server(gemmapod, model, os.path.join(work, "serve.log"))
    driver = None
    try:
        options = Options()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.ID, "model").text.startswith("tiny"))
        # Greedy and short, so the page's answers can be compared with the API's.
        driver.execute_script(
            "document.getElementById('temperature').value = '0';"
            "document.getElementById('max_tokens').value = '12';")
        conversation = []
        for turn, text in enumerate(["Hello there", "And then?"]):
            box = driver.find_element(By.ID, "input")
            box.send_keys(text)
            driver.find_element(By.ID, "send").click()
            WebDriverWait(driver, 60).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR,
                                              '.assistant[data-state="done"]')) == turn + 1)
            shown = driver.find_elements(By.CSS_SELECTOR, ".assistant")[turn].get_attribute(
                "textContent")
            conversation.append({"role": "user", "content": text})
            want = post(port, {"messages": conversation, "max_tokens": 12, "temperature": 0})
            if shown != want:
                sys.exit(f"turn {turn}: the page shows {shown!r}, the API answers {want!r}")
            conversation.append({"role": "assistant", "content": want})
        if not driver.find_elements(By.CSS_SELECTOR, ".stats"):
            sys.exit("the page shows no statistics line after an answer")
        errors = driver.find_elements(By.CSS_SELECTOR, ".error")
        if errors:
            sys.exit(f"the page shows an error: {errors[0].text}")
        print(f"chat page: two turns streamed in {driver.capabilities.get('browserName')} "
              f"{driver.capabilities.get('browserVersion')}, equal to the API's answers")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
