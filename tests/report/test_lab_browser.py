"""JupyterLab in a real browser (headless Chromium driven by Selenium), as a user meets it.

JupyterLab starts on a free local port with a token, with the project's Jupyter settings (``make install``
copies ``.jupyter/`` into the environment), on a copy of ``notebooks/00_smoke.py`` (the repository's
notebooks are never saved over). The test checks through JupyterLab's settings API that ``.py`` files open
as notebooks, opens the ``.py`` by URL, checks that it renders as a notebook, runs all its cells (the
smoke notebook loads the embedded models) and checks that no cell shows an error. Skipped when Chromium,
chromedriver or selenium is missing (``.ci/run`` installs Debian's chromium and chromium-driver).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from aep_lib import paths

ROOT = paths.project_root()
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"]
VIEWER_PLUGIN = "@jupyterlab/docmanager-extension:plugin"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver (apt-get install "
                                                               "chromium chromium-driver)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a copy of the notebook folder; yields (base URL, token)."""
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "00_smoke.py", root / "notebooks")
    shutil.copy(ROOT / "jupytext.toml", root)
    settings = tmp_path / "user-settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text('{"autosave": false}')
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEP_", "PYTEST_", "JUPYTER"))}
    env.update(AEP_OUTPUT_DIR=str(tmp_path / "out"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "user-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"))
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen([str(BIN / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                             "--ServerApp.port_retries=0", "--LabApp.expose_app_in_browser=True",
                             *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get(f"{base}/api/status?token={token}")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "lab.log").read_text()
                time.sleep(0.5)
        yield base, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_py_files_open_as_notebooks_by_default(lab):
    base, token = lab
    plugin = _get(f"{base}/lab/api/settings/{VIEWER_PLUGIN}?token={token}")
    # the value in effect: the user's own setting, else the schema's default with the overrides applied
    viewers = plugin["settings"].get("defaultViewers") or plugin["schema"]["properties"]["defaultViewers"]["default"]
    assert viewers.get("python") == "Jupytext Notebook", viewers


def test_the_smoke_notebook_runs_in_jupyterlab(lab, tmp_path):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, token = lab
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"{base}/lab/tree/notebooks/00_smoke.py?token={token}")
        wait = WebDriverWait(driver, 120)
        # a notebook panel with its cells, not the text editor
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell")) >= 5)
        assert not driver.find_elements(By.CSS_SELECTOR, ".jp-FileEditor")
        wait.until(lambda d: d.execute_script(
            "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
            " && w.sessionContext.session.kernel.status === 'idle');"))
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
        code_prompts = ".jp-CodeCell .jp-InputArea-prompt"

        def finished(d):
            prompts = [p.text.strip() for p in d.find_elements(By.CSS_SELECTOR, code_prompts)]
            return prompts and all(p.startswith("[") and p[1:-2].strip().isdigit() for p in prompts)

        WebDriverWait(driver, 240).until(finished)
        errors = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type="
                                                       "'application/vnd.jupyter.stderr']")
        shown = [e.text for e in errors if "Error" in e.text or "Traceback" in e.text]
        assert not shown, shown
        text = driver.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel").text
        assert "smollm2-135m: vocab 49152, greedy continuation ok" in text
    finally:
        driver.quit()
