"""Companion training package for slicewise: data, training loop, evaluation and export."""
