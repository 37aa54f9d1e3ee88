"""Plotting functions that turn result tables into the paper's figures."""
