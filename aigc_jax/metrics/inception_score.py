"""Scores of the classifier's class predictions: Inception Score (IS) and label accuracy.

Pure numpy/scipy in float64 on (N, C) class probabilities or logits. Reference (IS): Salimans
et al. 2016.
"""

from __future__ import annotations

import numpy as np
import scipy.special

from aigc_jax.metrics.feature_arrays import as_features


def inception_score(class_probs, num_splits: int = 10) -> tuple[float, float]:
  """exp(E_x KL(p(y|x) || p(y))): (mean, std) over `num_splits` contiguous splits.

  `class_probs` are (N, C) probabilities (softmax of the classifier's logits); IS lies in
  [1, C]: C for confident predictions spread evenly over the classes, 1 for a single class.
  """
  p = as_features(class_probs, "inception_score class_probs", min_rows=num_splits)
  if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
    raise ValueError("inception_score: rows must be probabilities (apply a softmax to logits)")
  scores = []
  for part in np.array_split(p, num_splits):
    py = part.mean(axis=0, keepdims=True)
    kl = scipy.special.xlogy(part, part) - scipy.special.xlogy(part, py)
    scores.append(np.exp(kl.sum(axis=1).mean()))
  return float(np.mean(scores)), float(np.std(scores))


def label_accuracy(class_logits, requested_labels) -> float:
  """Fraction of (N, C) logit rows whose argmax is the (N,) label they were generated for."""
  logits = np.asarray(class_logits)
  labels = np.asarray(requested_labels).reshape(-1)
  if logits.ndim != 2 or len(logits) != len(labels):
    raise ValueError(f"label_accuracy: expected (N, C) logits and (N,) labels, got "
                     f"{logits.shape} and {labels.shape}")
  return float((logits.argmax(axis=1) == labels).mean())
