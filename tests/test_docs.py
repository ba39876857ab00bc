"""The README and docs/: the README fits a screen, every link resolves, the layout page matches the
tree, and the recipes page is today's plan. (Every command they show is run or dry-run by
test_doc_commands.py.)"""

import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
PACKAGE = ROOT / "src" / "resnet_repro"


def table(page, heading):
    """The first column of the table under `## heading` of a page, each cell's `code` text."""
    section = page.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [re.search(r"`([^`]+)`", row).group(1) for row in re.findall(r"^\| `.+?\|", section, re.M)]


def test_readme_fits_a_screen_and_links_every_doc():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert all(f"(docs/{d.name})" in readme for d in DOCS), [d.name for d in DOCS if f"(docs/{d.name})" not in readme]


def anchors(page):
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if re.match(r"\w+://", target):
                continue
            path = page.parent / target if target else page
            if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
                broken.append(f"{page.relative_to(ROOT)}: {target}#{anchor}")
    assert broken == []


def test_commands_sit_in_sh_blocks_only():
    """test_doc_commands runs the ```sh blocks: a command in a block of another language would escape it."""
    fences = {lang for page in PAGES for lang in re.findall(r"^```(\w*)$", page.read_text(), re.M)} - {""}
    assert fences <= {"sh", "ini"}, fences


def test_layout_lists_every_module_and_each_exists():
    listed = table(ROOT / "docs" / "layout.md", "Modules")
    tree = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert len(listed) == len(set(listed)), "a module listed twice"
    assert sorted(tree - set(listed)) == [] and sorted(set(listed) - tree) == []


def test_layout_lists_every_top_level_path_and_each_exists():
    listed = table(ROOT / "docs" / "layout.md", "The repository")
    assert [p for p in listed if not (ROOT / p).exists()] == []
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    top = {line.split("/")[0] for line in tracked.splitlines() if not line.startswith(".")}
    assert sorted(top - {p.split("/")[0] for p in listed}) == []
    folders = {f"workflow/{p.name}/" for p in (ROOT / "workflow").iterdir() if p.is_dir()}
    assert sorted(folders - set(listed)) == []


def test_recipes_page_is_todays_plan():
    r = subprocess.run([sys.executable, ROOT / "scripts" / "recipes.py", "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_readme_cost_block_is_what_estimate_makes_of_the_committed_rates():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- cost:", 1)[1].split("-->", 1)[1].split("<!-- /cost -->", 1)[0].strip()
    rates = ROOT / "benchmarks" / "results" / "rates-h100-doctor.json"
    r = subprocess.run(
        [Path(sys.executable).parent / "resnet-repro", "estimate", "all", "--rates", rates, "--markdown"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert block == r.stdout.strip(), "the README's cost block is stale: paste the command's output"
