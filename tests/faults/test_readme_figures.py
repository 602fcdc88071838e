"""The figures the README gives are the ones this suite counts."""

import re
from pathlib import Path

from test_bad_inputs import BAD_INPUTS
from test_faults import FAULTS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_gives_the_suites_counts():
    text = " ".join(README.read_text().split())
    assert re.search(rf"tries {len(BAD_INPUTS)} bad inputs, all handled cleanly", text)
    assert re.search(rf"injects {len(FAULTS)} faults .* all survived with nothing lost", text)
