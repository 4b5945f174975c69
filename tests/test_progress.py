"""Progress of chunked work: a bar on a terminal, plain periodic lines elsewhere, and log lines
that go above a bar being shown instead of into it."""

import io
import logging
import re
import sys
import types

from aigc_jax import progress


class FakeTerminal(io.StringIO):
  """stderr as a terminal: tqdm draws its bar into it."""

  def isatty(self):
    return True


def terminal_stderr(monkeypatch) -> FakeTerminal:
  """A terminal as sys.stderr, for the rest of the test (set in the test's body: pytest's output
  capture sets its own stderr between a fixture's setup and the test)."""
  terminal = FakeTerminal()
  monkeypatch.setattr(sys, "stderr", terminal)
  return terminal


def log_halfway(handler: logging.Handler) -> None:
  """Draws 4 chunks with a bar, logging one line (through `handler`) after the second."""
  logger = logging.getLogger("aigc_jax.test_progress")
  handler.setFormatter(logging.Formatter("%(message)s"))
  logger.addHandler(handler)
  try:
    for chunk in progress.progress(range(4), desc="sampling"):
      if chunk == 2:
        logger.warning("halfway there")
  finally:
    logger.removeHandler(handler)


def pieces(text: str) -> list[str]:
  """What a terminal shows on one line: the text between carriage returns and newlines."""
  return re.split(r"[\r\n]", text)


def test_a_line_logged_under_a_bar_is_written_above_it(monkeypatch):
  terminal = terminal_stderr(monkeypatch)
  log_halfway(progress.LogHandler())
  text = terminal.getvalue()
  assert "sampling:" in text and "4/4" in text and "\r" in text  # a bar was drawn, to the end
  assert "halfway there" in pieces(text)  # on a line of its own
  after = text[text.index("halfway there"):]
  assert "sampling:" in after  # the bar is drawn again below the line


def test_a_plain_handler_would_write_into_the_bar(monkeypatch):
  """What LogHandler avoids: the same line through a plain stream handler lands after the bar's
  text, on the bar's line."""
  terminal = terminal_stderr(monkeypatch)
  log_halfway(logging.StreamHandler(sys.stderr))
  line = next(p for p in pieces(terminal.getvalue()) if "halfway there" in p)
  assert line.startswith("sampling:") and line != "halfway there"


def test_outside_a_terminal_progress_is_plain_lines(monkeypatch, caplog):
  monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
  with caplog.at_level("INFO", logger="aigc_jax.progress"):
    assert list(progress.progress(range(0, 3000, 1000))) == [0, 1000, 2000]
  lines = [r.getMessage() for r in caplog.records]
  assert [line.split(" done")[0] for line in lines] == [f"sampling: chunk {i}/3" for i in (1, 2, 3)]
  assert not any("\r" in line for line in lines)


def test_outside_a_terminal_lines_come_at_most_every_interval_and_at_the_end(monkeypatch, caplog):
  clock = iter([0.0, 1.0, 11.0, 12.0, 13.0, 30.0])  # the start, then after each of 5 chunks
  monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
  with caplog.at_level("INFO", logger="aigc_jax.progress"):
    assert list(progress.progress(range(5), desc="nll_iwae")) == list(range(5))
  assert [r.getMessage() for r in caplog.records
         ] == ["nll_iwae: chunk 2/5 done (11 s)", "nll_iwae: chunk 5/5 done (30 s)"]


def test_a_counting_bar_outside_a_terminal_is_plain_lines(monkeypatch, caplog):
  clock = iter([0.0, 4.0, 12.0, 13.0, 14.0])  # the start, then after each of 4 updates
  monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
  with caplog.at_level("INFO", logger="aigc_jax.progress"):
    with progress.bar(7, "classifier", initial=1) as counter:
      for n in (1, 2, 1, 2):
        counter.update(n)
        counter.set_postfix(loss="0.500")
  assert [r.getMessage() for r in caplog.records
         ] == ["classifier: 4/7 step (12 s) loss=0.500", "classifier: 7/7 step (14 s) loss=0.500"]


def test_a_counting_bar_on_a_terminal_is_tqdms_and_hidden_when_not_shown(monkeypatch):
  terminal = terminal_stderr(monkeypatch)
  with progress.bar(3, "k-means") as counter:
    counter.update(3)
  assert "k-means" in terminal.getvalue() and "3/3" in terminal.getvalue()
  with progress.bar(3, "hidden", shown=False) as counter:
    counter.update(3)
  assert "hidden" not in terminal.getvalue()


def test_a_plain_bar_line_carries_its_rate_since_the_start_and_the_postfix(monkeypatch, caplog):
  clock = iter([0.0, 10.0])  # the start, then the update
  monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
  bar = progress.PlainBar(8, "vae", "step", initial=4, line="step {n}/{total} ({rate:.1f} steps/s)")
  bar.set_postfix({"loss": "0.52"}, d_loss=1)
  with caplog.at_level("INFO", logger="aigc_jax.progress"):
    bar.update(4)  # the total: a line though under PLAIN_EVERY_S
  assert [r.getMessage() for r in caplog.records] == ["step 8/8 (0.4 steps/s) loss=0.52, d_loss=1"]
