"""The public applications: ``movierec.apps.gateway`` (folder ``gateway/``) and
``movierec.apps.web`` (folder ``web/``). They may use the services' contracts and the
shared library, never the local runtime or the CLI above them."""
