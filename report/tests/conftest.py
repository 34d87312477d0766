import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPORT = os.path.dirname(TESTS)
sys.path.insert(0, REPORT)
sys.path.insert(0, TESTS)


@pytest.fixture
def fixture_path():
    return lambda name: os.path.join(TESTS, "fixtures", name)
