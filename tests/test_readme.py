"""Every Python block of README.md runs as written, so the README cannot rot.

Each ```python block runs on its own, in a fresh namespace: a block that
needs data defines it. A block may be left out only by an HTML comment
``<!-- not-run: reason -->`` on the line right before it, and no block of
the README is.
"""

import doctest
import pathlib
import re
import textwrap
from typing import NamedTuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
NOT_RUN = re.compile(r'<!--\s*not-run:\s*(.+?)\s*-->')


class Block(NamedTuple):
  path: pathlib.Path
  line: int  # 1-based line of the opening fence
  code: str
  not_run: str | None  # the reason given by a not-run marker, if any

  @property
  def id(self) -> str:
    return f'{self.path.relative_to(ROOT)}:{self.line}'


def python_blocks(path: pathlib.Path) -> list[Block]:
  """The ```python fenced blocks of a Markdown file, in order."""
  lines = path.read_text(encoding='utf-8').splitlines()
  blocks, index = [], 0
  while index < len(lines):
    if lines[index].strip() != '```python':
      index += 1
      continue
    start = index
    index += 1
    while lines[index].strip() != '```':
      index += 1
    previous = lines[start - 1].strip() if start else ''
    marker = NOT_RUN.fullmatch(previous)
    # A block inside a list item is indented like the item.
    code = textwrap.dedent('\n'.join(lines[start + 1:index]) + '\n')
    blocks.append(Block(path, start + 1, code,
                        marker.group(1) if marker else None))
    index += 1
  return blocks


def run_block(block: Block) -> None:
  """Runs a block: as a doctest if it is written as one, else as a script."""
  name = block.id
  if block.code.lstrip().startswith('>>>'):
    test = doctest.DocTestParser().get_doctest(block.code, {}, name, name,
                                               block.line)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, ''.join(report)
  else:
    exec(compile(block.code, name, 'exec'), {'__name__': '__main__'})  # pylint: disable=exec-used


BLOCKS = python_blocks(README)


def test_python_block_parser_reads_fences_and_markers(tmp_path):
  page = tmp_path / 'page.md'
  page.write_text('text\n```python\nx = 1\n```\n<!-- not-run: why -->\n'
                  '```python\ny = 2\n```\n```bash\nls\n```\n')
  blocks = python_blocks(page)
  assert [(b.line, b.code, b.not_run) for b in blocks] == [
      (2, 'x = 1\n', None), (6, 'y = 2\n', 'why')]


def test_readme_has_python_blocks():
  assert len(BLOCKS) >= 5


def test_every_readme_block_runs():
  assert [block.id for block in BLOCKS if block.not_run is not None] == []


def test_quick_start_is_the_example_file():
  lines = README.read_text(encoding='utf-8').splitlines()
  heading = lines.index('## Quick start') + 1
  first = next(block for block in BLOCKS if block.line > heading)
  example = (ROOT / 'examples' / 'quickstart.py').read_text(encoding='utf-8')
  assert first.code == example


def _slow(block: Block) -> bool:
  """The Flax recipes compile Flax models: full suite only."""
  return 'flax' in block.code


@pytest.mark.parametrize(
    'block',
    [pytest.param(b, marks=pytest.mark.slow) if _slow(b) else b
     for b in BLOCKS if b.not_run is None],
    ids=lambda b: b.id)
def test_readme_block_runs(block, capsys):
  run_block(block)
  capsys.readouterr()


def test_readme_fits_on_a_few_screens():
  assert len(README.read_text(encoding='utf-8').splitlines()) <= 300


_RESULT_LINK = re.compile(
    r'\]\(((?:benchmarks|mtl_bench)/results/[^)\s]+\.md)\)')
_DECIMAL = re.compile(r'-?\d+\.\d+(?:e[+-]\d+)?')


def _prose_paragraphs(text: str) -> list[str]:
  """The README's paragraphs and list items, code blocks left out."""
  paragraphs, current, in_code = [], [], False
  for line in text.splitlines():
    if line.startswith('```'):
      in_code = not in_code
      continue
    if in_code:
      continue
    if not line.strip() or line.startswith('- '):
      if current:
        paragraphs.append(' '.join(current))
      current = [line] if line.strip() else []
    else:
      current.append(line)
  if current:
    paragraphs.append(' '.join(current))
  return paragraphs


def test_every_number_comes_from_the_result_file_it_links():
  """A paragraph that links a committed result file quotes only its numbers,
  so a re-run that changes them makes this test fail, not the README lie."""
  checked = 0
  for paragraph in _prose_paragraphs(README.read_text(encoding='utf-8')):
    files = _RESULT_LINK.findall(paragraph)
    if not files:
      continue
    source = ''.join((ROOT / name).read_text(encoding='utf-8')
                     for name in files)
    for number in _DECIMAL.findall(_RESULT_LINK.sub('', paragraph)):
      assert number in source, (number, files)
      checked += 1
  assert checked >= 10
