"""SASRec: a causal transformer over a user's ordered history (what to watch next).

Roles: :mod:`.data` (ordered sequences), :mod:`.model` (the torch network),
:mod:`.train` (full cross-entropy training, early stopping), :mod:`.export` (the
versioned artifact), :mod:`.encoder` (numpy inference the embedder serves),
:mod:`.commands` (``movierec train|evaluate sasrec``). docs/sequence.md.
"""
