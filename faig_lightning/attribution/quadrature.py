"""Quadrature rules on the straight path, in the paper's convention: alpha=0 is the baseline, alpha=1 the target."""

from __future__ import annotations

import numpy as np

from faig_lightning.errors import FaigError

RULES = ("official", "trapezoid", "gauss_legendre")


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``alphas`` in [0, 1] and weights (summing to 1) so that ``sum(w * f(alphas)) ~ int_0^1 f``.

    - ``official``: ``alpha = 1 - s/N`` for ``s = 0..N-1``, weights ``1/N``. A right-endpoint Riemann sum that
      includes the target and excludes the baseline; the official code's ``alpha_code = s/N`` measured from the
      target. First-order accurate.
    - ``trapezoid``: ``N`` intervals, ``N + 1`` nodes ``s/N``, end weights ``1/(2N)``. Second-order accurate.
    - ``gauss_legendre``: ``N`` Gauss-Legendre nodes mapped to [0, 1]; exact for polynomials of degree ``2N - 1``.

    Both float64 arrays are ordered by descending alpha (from the target towards the baseline).
    """
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer):
        raise FaigError(f"steps must be an integer >= 1, got {steps!r}")
    if steps < 1:
        raise FaigError(f"steps must be >= 1, got {steps}; the paper uses 100 with the 'official' rule")
    n = int(steps)
    if rule == "official":
        alphas = 1.0 - np.arange(n, dtype=np.float64) / n
        weights = np.full(n, 1.0 / n)
    elif rule == "trapezoid":
        alphas = 1.0 - np.arange(n + 1, dtype=np.float64) / n
        weights = np.full(n + 1, 1.0 / n)
        weights[[0, -1]] = 0.5 / n
    elif rule == "gauss_legendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        alphas = (nodes[::-1] + 1.0) / 2.0
        weights = w[::-1] / 2.0
    else:
        raise FaigError(f"unknown quadrature rule {rule!r}; choose one of {', '.join(RULES)}")
    return alphas, weights
