"""Command-line helpers of the benchmark's commands (no JAX import here).

Every command parses and checks all its options before it imports JAX or
trains anything, so ``--help`` is instant and a bad value ends in one line on
stderr and exit status 2 (argparse's convention), never a traceback and never
a half-made output folder. Ctrl-C is caught the same way: a flag checked at
safe points, then one line and exit status 130 (``catch_interrupts``).
"""

import argparse
import math
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import time


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
  """Every option's default, written as typed; the epilog kept as laid out.

  No ``(default: None)`` or ``(default: False)`` (an unset option or a flag),
  none where the help text gives the default itself, and a list default as
  its values (``multidigits``, not ``['multidigits']``).
  """

  def _get_help_string(self, action):
    text = action.help or ''
    default = action.default
    if ('default' in text or default is None or default is False
        or default is argparse.SUPPRESS or action.option_strings == []):
      return text
    if isinstance(default, (list, tuple)):
      default = ' '.join(str(value) for value in default)
    return f'{text} (default: {str(default).replace("%", "%%")})'


def wrap(text: str, first: str = '', indent: str = '  ') -> str:
  """``text`` wrapped to the terminal, for a hand-laid-out epilog."""
  width = min(shutil.get_terminal_size().columns, 100) - 2
  return textwrap.fill(' '.join(text.split()), width=width,
                       initial_indent=first, subsequent_indent=indent)


class Parser(argparse.ArgumentParser):
  """``argparse`` with one-line errors and every option's default in --help."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault('formatter_class', HelpFormatter)
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

  Walks up to the first existing ancestor, which must be a folder, and
  creates (and at once deletes) a temporary file in it: permission bits
  alone do not tell (root passes ``os.access`` everywhere, ``/proc`` and
  read-only mounts refuse files all the same). Leaves nothing behind.
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
  try:
    with tempfile.TemporaryFile(dir=probe):
      pass
  except OSError as error:
    reason = error.strerror or type(error).__name__
    if isinstance(error, PermissionError):
      reason = 'no permission'
    fail(f'{option} {path!r}: cannot write in {probe!r} ({reason})')
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


class Interrupted(KeyboardInterrupt):
  """Ctrl-C was pressed; raised by ``check_interrupt`` at a safe point.

  A ``KeyboardInterrupt``, so code that handles Ctrl-C handles it too; its
  message, if any, is the one line the command prints.
  """


_INTERRUPTS = [0]


def catch_interrupts() -> None:
  """Ctrl-C (SIGINT) sets a flag instead of raising wherever Python is.

  ``check_interrupt`` raises ``Interrupted`` at the next safe point (the
  trainer checks after a compilation and after each chunk of steps), so
  no exception unwinds through JAX mid-call. A second Ctrl-C raises
  ``KeyboardInterrupt`` at once.
  """

  def handler(signum, frame):
    del signum, frame
    _INTERRUPTS[0] += 1
    if _INTERRUPTS[0] > 1:
      raise KeyboardInterrupt

  signal.signal(signal.SIGINT, handler)


def check_interrupt() -> None:
  """Raises ``Interrupted`` if Ctrl-C was pressed since ``catch_interrupts``."""
  if _INTERRUPTS[0]:
    raise Interrupted


def exit_interrupted(message: str, prog: str | None = None) -> None:
  """Prints ``prog: message`` as one line and ends the process with 130.

  130 is the shell's status for a process stopped by SIGINT. ``os._exit``
  skips the interpreter's teardown, which can crash while XLA's threads
  are still busy with an interrupted compilation.
  """
  prog = prog or os.path.basename(sys.argv[0])
  sys.stdout.flush()
  sys.stderr.write(f'{prog}: {message}\n')
  sys.stderr.flush()
  os._exit(130)  # pylint: disable=protected-access
