"""movierec gRPC services (catalog, retriever, embedder); the gateway is the top-level package."""
