"""Command-line helpers shared by the example scripts (no JAX import here).

Every script parses and checks all its options before it imports JAX or
trains anything, so ``--help`` is instant and a bad value ends in one line on
stderr and exit status 2 (argparse's convention), never a traceback and never
a half-made output folder.
"""

import argparse
import math
import os
import sys
import time


class Parser(argparse.ArgumentParser):
  """``argparse`` with one-line errors and every option's default in --help."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault('formatter_class',
                      argparse.ArgumentDefaultsHelpFormatter)
    super().__init__(*args, **kwargs)

  def error(self, message):
    """``prog: error: message`` on one line, exit status 2 (no usage block)."""
    fail(message, self.prog)


def fail(message: str, prog: str | None = None) -> None:
  """Prints ``prog: error: message`` as one line to stderr and exits with 2."""
  prog = prog or os.path.basename(sys.argv[0])
  sys.stderr.write(f'{prog}: error: {" ".join(str(message).split())}\n')
  sys.exit(2)


def _integer_at_least(text: str, smallest: int) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'{text!r} is not an integer') from None
  if value < smallest:
    raise argparse.ArgumentTypeError(f'must be ≥ {smallest}, got {value}')
  return value


def positive_int(text: str) -> int:
  """An ``argparse`` type: an integer ≥ 1."""
  return _integer_at_least(text, 1)


def non_negative_int(text: str) -> int:
  """An ``argparse`` type: an integer ≥ 0."""
  return _integer_at_least(text, 0)


def positive_float(text: str) -> float:
  """An ``argparse`` type: a finite number > 0."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
  if not math.isfinite(value) or value <= 0:
    raise argparse.ArgumentTypeError(f'must be finite and > 0, got {text}')
  return value


def unit_float(text: str) -> float:
  """An ``argparse`` type: a finite number in [0, 1)."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
  if not 0.0 <= value < 1.0:
    raise argparse.ArgumentTypeError(f'must be in [0, 1), got {text}')
  return value


def check_writable_dir(path: str, option: str) -> str:
  """Fails (one line, exit 2) unless ``path`` is or can become a writable folder.

  Creates nothing: it walks up to the first existing ancestor and checks
  that it is a folder the user may write into.
  """
  absolute = os.path.abspath(path)
  probe = absolute
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    fail(f'{option} {path!r}: {probe!r} exists and is not a folder')
  if not os.access(probe, os.W_OK | os.X_OK):
    fail(f'{option} {path!r}: no permission to write in {probe!r}')
  return absolute


def new_run_dir(root: str) -> str:
  """Creates and returns ``root/<YYYYmmdd-HHMMSS>[-N]``, a folder no run used.

  ``os.makedirs(..., exist_ok=False)`` makes the claim atomic: two runs
  started in the same second get ``…-2``, ``…-3``; nothing is overwritten.
  """
  stamp = time.strftime('%Y%m%d-%H%M%S')
  os.makedirs(root, exist_ok=True)
  for count in range(1, 10_000):
    path = os.path.join(root, stamp if count == 1 else f'{stamp}-{count}')
    try:
      os.makedirs(path)
      return path
    except FileExistsError:
      continue
  fail(f'could not create a new run folder in {root!r}')
  return ''  # Unreachable: fail() exits.
