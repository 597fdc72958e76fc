"""Shared test setup: offline hub, and notebooks stay out of plain unit-test collection.

Notebooks are tested by nbval (`make test` runs `pytest --nbval notebooks/*.ipynb`), never collected
as Python modules: their jupytext `.py` twins are sources, not tests.
"""

import os

import pytest

collect_ignore_glob = ["../notebooks/*", "*.ipynb"]


@pytest.fixture(scope="session", autouse=True)
def offline_hub():
    """No test may reach a model hub: HF_HUB_OFFLINE=1 and no tokenizer thread pools for the session."""
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
