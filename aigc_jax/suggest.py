"""Error messages that name what was meant: the closest known key or choice."""

from __future__ import annotations

import difflib


def unknown_key_message(key: str, known) -> str:
  close = difflib.get_close_matches(key, list(known), n=1)
  hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(sorted(known))}"
  return f"unknown config key '{key}': {hint}"


def unknown_choice_message(key: str, value, choices) -> str:
  """The error for `key`'s `value` outside `choices`: the closest choice if one is near, and all."""
  names = sorted(choices)
  close = difflib.get_close_matches(str(value), names, n=1)
  hint = f"did you mean '{close[0]}'? " if close else ""
  return f"{key} '{value}' is unknown; {hint}choose one of {', '.join(names)}"
