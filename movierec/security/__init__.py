"""Security primitives shared by every process: TLS credentials, signed tokens, log redaction."""
