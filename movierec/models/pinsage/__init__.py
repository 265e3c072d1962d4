"""PinSage (DGL) movie embeddings: graph model, training, export and light inference.

Serving imports only :class:`movierec.models.pinsage.encoder.PinSageEncoder`, which
needs numpy and the exported artifact (no torch, no dgl).
"""
