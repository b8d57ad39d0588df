"""Matplotlib figures: the finder curve, the schedule catalogue, study summaries.

Every function here writes a PNG file and returns nothing; matplotlib is imported
inside the functions with the non-interactive ``Agg`` backend, so importing this
module is cheap and never needs a display.
"""

from __future__ import annotations
