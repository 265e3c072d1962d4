"""The web demo: an HTTP/JSON facade over the gRPC gateway and the page it serves.

``python -m movierec.apps.web`` (or ``movierec serve web``) runs
:func:`movierec.apps.web.server.main`; the API
lives under ``/api``, its OpenAPI docs under ``/docs`` and ``/redoc`` (assets served
locally, no CDN) and the single-page demo at ``/``.
"""
