"""The movierec gateway: the public gRPC API."""
