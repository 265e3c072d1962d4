"""Offline evaluation: ranking metrics, baselines and the full-ranking protocols."""
