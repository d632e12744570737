"""Sphinx configuration: MyST pages, API pages generated from ``__all__``.

Build with ``sphinx-build -W -b html docs docs/_build/html``. The API pages
under ``docs/api/`` are written here, at configuration time, from
``mtl_optax.__all__`` (and ``mtl_optax.weightings.__all__`` when that module
exists), so a new public name gets its page without editing the docs.
MathJax is served from the built site (``_static/mathjax/``, copied from the
``django-static-mathjax`` package of the docs extra), so the pages typeset
their math offline; ``tests/test_docs_build.py`` checks it.
"""

import importlib
import importlib.metadata
import inspect
import pathlib
import re
import shutil
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

import mtl_optax  # noqa: E402

project = 'mtl_optax'
author = 'mtl_optax authors'
copyright = 'mtl_optax authors'
release = mtl_optax.__version__
version = release

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'sphinx.ext.viewcode',
]
source_suffix = {'.md': 'markdown', '.rst': 'restructuredtext'}
exclude_patterns = ['_build']
root_doc = 'index'

myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence', 'deflist']
myst_heading_anchors = 3

autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_default_options = {'members': False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# `Attributes:` sections become field lists, so a NamedTuple's fields are not
# described twice (once by napoleon, once by autodoc).
napoleon_use_ivar = True

html_theme = 'furo'
html_title = f'mtl_optax {release}'

# --------------------------------------------------------------------------
# MathJax, served from the built site instead of a CDN.
#
# The assets come from the `django-static-mathjax` wheel (the docs extra):
# MathJax 3.2.2 and nothing else, no dependencies (its Django integration is
# one empty `mathjax/__init__.py`, never imported here). MathJax 3 reads the
# `\(..\)` and `\[..\]` delimiters that Sphinx writes around the math of
# MyST's `$..$`, `$$..$$` and amsmath blocks without any configuration.

MATHJAX_DIST = 'django-static-mathjax'
MATHJAX_ENTRY = 'tex-chtml.js'  # TeX in, HTML with web fonts out.
mathjax_path = f'mathjax/{MATHJAX_ENTRY}'  # relative: under _static/

# Of MathJax's `es5/` tree the site needs the entry point, the CHTML output
# and its fonts, the TeX extensions it autoloads (\boldsymbol, ...), and
# the menu's accessibility parts; the other combined entry points, SVG,
# MathML and AsciiMath are left out (23 MB -> 7 MB).
_MATHJAX_UNUSED = {
    'mml-chtml.js', 'mml-svg.js', 'node-main.js', 'tex-chtml-full.js',
    'tex-chtml-full-speech.js', 'tex-mml-chtml.js', 'tex-mml-svg.js',
    'tex-svg.js', 'tex-svg-full.js', 'svg', 'svg.js', 'mml', 'mml.js',
    'asciimath.js', 'adaptors'}


def mathjax_assets() -> pathlib.Path:
  """MathJax's `es5/` directory in the installed wheel, found from the
  wheel's metadata (nothing is imported)."""
  try:
    dist = importlib.metadata.distribution(MATHJAX_DIST)
  except importlib.metadata.PackageNotFoundError:
    dist = None
  es5 = (pathlib.Path(dist.locate_file('mathjax/static/mathjax/es5'))
         if dist is not None else None)
  if es5 is None or not (es5 / MATHJAX_ENTRY).is_file():
    raise RuntimeError(
        f'The docs serve MathJax from the {MATHJAX_DIST!r} package, which '
        'is not installed: pip install -e ".[docs]"')
  return es5


def _copy_mathjax(app, exception) -> None:
  """Copies MathJax into `_static/mathjax/` once the HTML is written."""
  if exception is not None or app.builder.format != 'html':
    return
  es5 = mathjax_assets()
  target = pathlib.Path(app.outdir) / '_static' / 'mathjax'
  shutil.copytree(es5, target, dirs_exist_ok=True,
                  ignore=lambda _, names: _MATHJAX_UNUSED & set(names))
  shutil.copy2(es5.parent / 'LICENSE', target / 'LICENSE')

# --------------------------------------------------------------------------
# API pages, generated from __all__.

API = DOCS / 'api'
METHOD_PAGES = DOCS / 'methods'


def _write(path: pathlib.Path, text: str) -> None:
  """Writes only on change, so incremental builds stay incremental."""
  if not path.exists() or path.read_text(encoding='utf-8') != text:
    path.write_text(text, encoding='utf-8')


def _kind(obj) -> str:
  return 'class' if inspect.isclass(obj) else 'function'


def _page(qualname: str, obj, method_page: str | None) -> str:
  # Out of every toctree (see _section), so marked as an orphan page.
  lines = ['---', 'orphan: true', '---', '', f'# `{qualname}`', '']
  if method_page:
    lines += [f'The equations, properties and an example are on the method '
              f'page [](../methods/{method_page}.md).', '']
  # autodoc emits reStructuredText, so it runs inside an eval-rst block.
  directive = 'autoclass' if _kind(obj) == 'class' else 'autofunction'
  lines += ['```{eval-rst}', f'.. {directive}:: {qualname}']
  if _kind(obj) == 'class':
    lines += ['   :members:']
  lines += ['```', '']
  return '\n'.join(lines)


def _section(title: str, intro: str, entries: list[str]) -> list[str]:
  """A list of links to the pages of ``entries``.

  Links, not a toctree: the theme (furo) copies the whole site's toctree
  into the sidebar of every page, so with the 130-odd API pages in it the
  build took twice as long (38 against 18 s, 2-core AMD EPYC), and the
  sidebar listed every public name. The sidebar shows this index page.
  """
  if not entries:
    return []
  links = [f'- [`{entry}`]({entry}.md)' for entry in entries]
  return [f'## {title}', '', intro, ''] + links + ['']


def generate_api_pages() -> None:
  API.mkdir(exist_ok=True)
  methods = {p.stem for p in METHOD_PAGES.glob('*.md')}
  wanted = {'index.md'}
  groups = {'method': [], 'building block': [], 'class': [], 'weighting': []}
  for name in mtl_optax.__all__:
    obj = getattr(mtl_optax, name)
    if inspect.ismodule(obj):  # e.g. `weightings`: its own section below
      continue
    page = f'mtl_optax.{name}'
    wanted.add(page + '.md')
    _write(API / (page + '.md'), _page(page, obj, name if name in methods
                                       else None))
    if inspect.isclass(obj):
      groups['class'].append(page)
    elif name in methods:
      groups['method'].append(page)
    else:
      groups['building block'].append(page)
  try:
    weightings = importlib.import_module('mtl_optax.weightings')
  except ImportError:
    weightings = None
  if weightings is not None:
    names = getattr(weightings, '__all__', None) or [
        n for n in dir(weightings) if not n.startswith('_')
        and not inspect.ismodule(getattr(weightings, n))]
    for name in names:
      page = f'mtl_optax.weightings.{name}'
      wanted.add(page + '.md')
      _write(API / (page + '.md'),
             _page(page, getattr(weightings, name),
                   name if name in methods else None))
      groups['weighting'].append(page)
  index = ['# API reference', '',
           'Every public name of `mtl_optax` (its `__all__`), one page each. '
           'Import the package as `import mtl_optax as mtl`.', '']
  index += _section(
      'Methods', 'Factories `mtl.<name>(num_tasks, ...)` returning an '
      '`optax.GradientTransformationExtraArgs` over task gradients.',
      groups['method'])
  index += _section(
      'Weightings', 'The namespace `mtl.weightings`: each method\'s '
      'weighting as a value that engines and combinators can call.',
      groups['weighting'])
  index += _section(
      'Building blocks', 'Per-task gradients, the Gramian, the weighted '
      'sum, the min-norm solver and the constructor of new methods.',
      groups['building block'])
  index += _section('States and types', 'NamedTuple states and the types '
                    'a weighting reads.', groups['class'])
  _write(API / 'index.md', '\n'.join(index))
  for stale in API.glob('*.md'):
    if stale.name not in wanted:
      stale.unlink()


generate_api_pages()


# --------------------------------------------------------------------------
# Docstring fix-ups.

# A line that is one capital letter and a period, alone or after an argument
# name (``num_tasks: T.``), would start a list lettered from that capital.
_LONE_LETTER = re.compile(r'^(\s*(?::param \w+:\s*|\w+:\s+)?)([A-Z])\.\s*$')


def _escape_lone_letters(app, what, name, obj, options, lines):
  """Escapes the period of such lines."""
  del app, what, name, obj, options
  for index, line in enumerate(lines):
    lines[index] = _LONE_LETTER.sub(r'\1\2\\.', line)


def setup(app):
  mathjax_assets()  # Fails early, before reading a page.
  app.connect('autodoc-process-docstring', _escape_lone_letters)
  app.connect('build-finished', _copy_mathjax)
