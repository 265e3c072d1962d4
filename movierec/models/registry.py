"""The one list of models movierec serves: what each is, where its code is, what it does.

The embedder loads encoders from it, the gateway and the web app validate model names
and word scores with it, the CLI's ``train``/``evaluate`` targets, the evaluation, the
local runtime's loaders and the scripts iterate over it. Adding a model is one entry
here plus its package (``movierec.models.<name>`` with ``commands``, an encoder class,
an artifact exporter). Pure data: code is named, never imported, so the gateway can
read this module without loading any model code (an import-linter contract says so).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

#: What an encoder can turn into a query vector (the embedder's RPCs):
#: ``profile`` (age, gender, occupation, optional id), ``liked`` (liked movie ids, optional
#: weights), ``history`` (a user's rated movies with stars and times: their taste),
#: ``sequence`` (the same history read in time order: what they will watch next).
INPUTS = ("profile", "liked", "history", "sequence")
#: most telling first: a user's own history says more than a profile or a liked list
MAIN_INPUT_ORDER = ("history", "sequence", "profile", "liked")


@dataclass(frozen=True)
class ModelSpec:
    """One model: identity, code, capabilities and how its answers read."""

    name: str                  # artifacts/<name>/, Milvus mr_<name>, Embedding.model
    title: str                 # for people
    encoder: str               # "module:Class" with ``load(path)`` -> an encoder
    inputs: tuple[str, ...]    # which of INPUTS its encoder embeds
    #: how a hit's reading (Embedding.reading) reads, formatted with ``reading`` and
    #: ``audience``; "" when the model's score is only an order
    reading: str = ""
    similar: bool = True       # its vector space answers SimilarMovies
    #: extra ``movierec train`` flags for ``make run``'s first start (a shorter budget)
    first_run: tuple[str, ...] = ()

    @property
    def main_input(self) -> str:
        """The input a model is judged on when it embeds several: the most telling."""
        return next(kind for kind in MAIN_INPUT_ORDER if kind in self.inputs)

    @property
    def package(self) -> str:
        return f"movierec.models.{self.name}"

    @property
    def commands(self) -> str:
        """Module with ``add_train_args``/``train``/``add_evaluate_args``/``evaluate``."""
        return f"{self.package}.commands"

    @property
    def collection(self) -> str:
        """The Milvus alias (or live-pointer name) of its served vectors."""
        return f"mr_{self.name}"


FUSION = ModelSpec("fusion", "fusion two-tower (PaddlePaddle)",
                   "movierec.models.fusion.inference:FusionEncoder", ("profile",),
                   reading="predicted {reading:.1f} stars for {audience}",
                   first_run=("--max-minutes", "6"))
PINSAGE = ModelSpec("pinsage", "PinSage (PyTorch + DGL)",
                    "movierec.models.pinsage.encoder:PinSageEncoder", ("liked", "history"),
                    first_run=("--time-budget", "6"))
#: what a known user will watch next (``Recommend{next_for_user_id}``); PinSage keeps
#: ``Recommend{user_id}``: it wins the per-user and the global time splits, SASRec the
#: next item (docs/sequence.md). The first run goes without the gap table: it slows the
#: first epochs, all a 6-minute budget has (valid HR@10 0.2070 against 0.1833)
SASREC = ModelSpec("sasrec", "SASRec sequential transformer (PyTorch)",
                   "movierec.models.sasrec.encoder:SasRecEncoder", ("sequence",), similar=False,
                   first_run=("--split", "leave_last_out", "--dim", "64", "--max-epochs",
                              "15", "--time-budget", "6", "--no-gaps"))

MODELS: tuple[ModelSpec, ...] = (FUSION, PINSAGE, SASREC)
BY_NAME = {m.name: m for m in MODELS}
NAMES = tuple(BY_NAME)
#: SimilarMovies' model when a request names none
DEFAULT_SIMILAR = PINSAGE.name


def get(name: str) -> ModelSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(BY_NAME)}") from None


def for_input(kind: str) -> ModelSpec:
    """The model that embeds ``kind`` (one of :data:`INPUTS`)."""
    for model in MODELS:
        if kind in model.inputs:
            return model
    raise KeyError(f"no model embeds {kind!r}")


def encoder_class(name: str) -> type:
    """The encoder class of model ``name``, imported only when asked for (what the
    embedder serves with and the evaluation scores with)."""
    module, _, attribute = get(name).encoder.partition(":")
    return getattr(importlib.import_module(module), attribute)


def similar_models() -> tuple[str, ...]:
    return tuple(m.name for m in MODELS if m.similar)
