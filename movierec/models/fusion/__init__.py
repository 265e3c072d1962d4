"""The "fusion" two-tower recommender (PaddlePaddle), after the Paddle book model.

Modules by role: :mod:`.features` (vocabularies, feature encoding), :mod:`.data`
(batches), :mod:`.model` (network), :mod:`.ranking` (the ranking objective),
:mod:`.train` (loop, checkpoints),
:mod:`.baselines` (global mean, user+item biases), :mod:`.export` (artifacts),
:mod:`.evaluate` (test-split metrics), :mod:`.inference` (numpy encoder and
in-process recommendations, no Paddle import), :mod:`.commands` (CLI).
"""
