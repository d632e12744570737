"""LibMTL's GradVac loop over groups of columns, in float64, for T = 2.

Shared by the GradVac tests of per-leaf and per-layer targets.
"""

import numpy as np


def libmtl_groups(steps, bounds, beta):
  """LibMTL's GradVac loop for T = 2 with groups of columns, float64, no ε.

  ``bounds`` are the column ranges of the groups (LibMTL's ``k_idx``). With
  two tasks each task visits only the other, so the random order does not
  matter. One departure from LibMTL, the library's documented decision
  (the paper's Algorithm 1): the targets move at every visited pair, where
  LibMTL moves them only at the pairs it modifies.
  """
  targets = np.zeros((len(bounds), 2, 2))
  updates = []
  for grads in steps:
    modified = grads.copy()
    for i in range(2):
      j = 1 - i
      for k, (begin, end) in enumerate(bounds):
        own, other = modified[i, begin:end], grads[j, begin:end]
        cosine = own @ other / (np.linalg.norm(own) * np.linalg.norm(other))
        target = targets[k, i, j]
        if cosine < target:
          amount = np.linalg.norm(own) * (
              target * np.sqrt(1 - cosine ** 2)
              - cosine * np.sqrt(1 - target ** 2)) / (
                  np.linalg.norm(other) * np.sqrt(1 - target ** 2))
          modified[i, begin:end] += amount * other
        targets[k, i, j] = (1 - beta) * target + beta * cosine
    updates.append(modified.sum(axis=0))
  return updates, targets
