"""Every Python block of the documentation pages runs and gives its output.

Blocks written as doctests (``>>>``) are checked line by line against the
output they show; the others run as scripts. Each block runs on its own.
"""

import pytest

from test_readme import ROOT, python_blocks, run_block

PAGES = sorted((ROOT / 'docs').rglob('*.md'))
PAGES = [p for p in PAGES if '_build' not in p.parts and 'api' not in p.parts]
BLOCKS = [block for page in PAGES for block in python_blocks(page)]


def test_every_method_page_has_a_doctested_example():
  for page in sorted((ROOT / 'docs' / 'methods').glob('*.md')):
    blocks = python_blocks(page)
    assert any(b.code.lstrip().startswith('>>>') for b in blocks), page


def test_no_docs_block_is_left_out():
  assert [b.id for b in BLOCKS if b.not_run is not None] == []


def _slow(block) -> bool:
  """The guides' scripts and the method pages' examples (each compiles its
  method; the method's values are the everyday subset's per-method tests)
  run in the full suite only."""
  return 'guides' in block.path.parts or 'methods' in block.path.parts


@pytest.mark.parametrize(
    'block',
    [pytest.param(b, marks=pytest.mark.slow) if _slow(b) else b
     for b in BLOCKS],
    ids=lambda b: b.id)
def test_docs_block_runs(block, capsys):
  run_block(block)
  capsys.readouterr()
