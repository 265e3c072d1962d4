"""movierec: a personalized movie recommender served by gRPC microservices.

This package is the shared library: settings, logging, server plumbing, error
mapping, MovieLens data handling, the local runtime for the stores, the models
and the ``movierec`` command line.
"""

__version__ = "0.1.0"
