"""Data files shipped with perfscale (sentence corpus)."""
