"""The docs build with warnings as errors, and the site needs no network.

MathJax comes from the ``django-static-mathjax`` package (the docs extra),
copied into ``_static/mathjax/`` by ``docs/conf.py``: a built page loads it
by a relative path, and no page loads a script from another host.
"""

import html.parser
import pathlib
import subprocess
import sys

import pytest

from test_readme import ROOT


class _Scripts(html.parser.HTMLParser):
  """Collects the ``src`` of every ``<script>`` of a page."""

  def __init__(self):
    super().__init__()
    self.sources = []

  def handle_starttag(self, tag, attrs):
    source = dict(attrs).get('src')
    if tag == 'script' and source:
      self.sources.append(source)


def script_sources(page: pathlib.Path) -> list[str]:
  parser = _Scripts()
  parser.feed(page.read_text(encoding='utf-8'))
  return parser.sources


@pytest.fixture(scope='module')
def site(tmp_path_factory) -> pathlib.Path:
  """The HTML site, built the way `.ci/run` builds it (about 20 s)."""
  out = tmp_path_factory.mktemp('html')
  subprocess.run(
      [sys.executable, '-m', 'sphinx', '-q', '-W', '-b', 'html',
       str(ROOT / 'docs'), str(out)],
      check=True, cwd=ROOT)
  return out


def test_script_parser_reads_sources():
  parser = _Scripts()
  parser.feed('<script>x = 1</script><script defer src="a/b.js?v=1">'
              '</script><link href="c.css">')
  assert parser.sources == ['a/b.js?v=1']


@pytest.mark.slow
def test_method_page_loads_the_local_mathjax(site):
  page = site / 'methods' / 'mgda.html'
  text = page.read_text(encoding='utf-8')
  # Sphinx wraps inline math in \( \): MathJax 3's default delimiters.
  assert r'<span class="math notranslate nohighlight">\(' in text
  mathjax = [s for s in script_sources(page) if 'mathjax' in s.lower()]
  assert mathjax == ['../_static/mathjax/tex-chtml.js']
  script = (page.parent / mathjax[0].split('?')[0]).resolve()
  assert script.is_file() and script.stat().st_size > 100_000
  # MathJax loads its fonts from beside its script.
  fonts = script.parent / 'output' / 'chtml' / 'fonts' / 'woff-v2'
  assert len(list(fonts.glob('*.woff'))) > 10


@pytest.mark.slow
def test_no_page_loads_a_script_from_another_host(site):
  pages = sorted(site.rglob('*.html'))
  assert len(pages) > 50
  remote = {(str(page.relative_to(site)), source) for page in pages
            for source in script_sources(page) if '://' in source
            or source.startswith('//')}
  assert remote == set()
