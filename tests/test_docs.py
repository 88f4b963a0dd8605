"""The documentation: the site builds strictly (a broken link, a page missing from the nav or
an undocumented public name in the API reference fails), the generated pages match the code,
and the README links only to files inside the repository."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tensorforge.tools import docgen

ROOT = Path(__file__).resolve().parent.parent
# [text](target) links and <a href="target"> in Markdown; images too.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|href=\"([^\"]+)\"")


def test_generated_pages_match_the_code():
    stale = [str(path.relative_to(ROOT)) for path, text in docgen.generate(ROOT / "docs").items()
             if not path.exists() or path.read_text() != text]
    assert stale == [], (f"out of date: {stale}; run `python -m tensorforge.tools.docgen` "
                         f"(make docs does)")


def test_site_builds_strictly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "architecture" / "index.html").exists()


def test_readme_links_stay_inside_the_repository():
    text = (ROOT / "README.md").read_text()
    links = [a or b for a, b in _LINK.findall(text)]
    assert links, "the README should point readers at docs/"
    for link in links:
        target = link.split("#", 1)[0]
        assert "://" not in link and not link.startswith(("/", "mailto:")), \
            f"README links outside the repository: {link}"
        if target:
            path = (ROOT / target).resolve()
            assert path.is_relative_to(ROOT), f"README link leaves the repository: {link}"
            assert path.exists(), f"README link to a missing file: {link}"


def test_docgen_check_reports_a_stale_page(tmp_path):
    """`docgen --check` fails on a page that differs from the code (and writes nothing)."""
    docs = tmp_path / "docs"
    assert docgen.main([str(docs)]) == 0
    page = docs / "reference" / "passes.md"
    page.write_text(page.read_text() + "\nhand edit\n")
    assert docgen.main([str(docs), "--check"]) == 1
    assert page.read_text().endswith("hand edit\n")
