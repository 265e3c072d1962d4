"""The shared evaluation protocol (docs/evaluation.md): splits' ranking tasks, metrics,
baselines, the served paths and the reports, used by every model and baseline.

This package is library code: it imports models and data, never the services or apps.
"""
