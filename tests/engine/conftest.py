"""The tiny random model (``tests/_tiny.py``) the engine tests share: built once per test module into a
temporary folder, loaded in float32 on the CPU."""

import pytest


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from _tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "m")


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    from aep_lib.engine.models import load_model

    return load_model(str(tiny_folder), device="cpu", dtype="float32")
