"""Shallow learners on feature matrices, the pixel baseline, and their evaluation."""
