"""The subject ledger: consent and subject state from their own stream, as of event time.

``model``  domain types (facts, scopes, questions, answers, provenance)
``codec``  the subject-fact schema's JSON-lines and Avro forms, decoded strictly
``asof``   pure: the state of one subject at an instant (:class:`SubjectView`)
``store``  the embedded on-disk store (LMDB) per instance, keyed by subject pseudonym
``late``   the bounded index of recent decisions, and which ones a late fact changes
``claims`` an event's own consent and age claims that the ledger contradicts
"""

from auditor.ledger.asof import SubjectView, age_on, answer, normalise
from auditor.ledger.claims import Contradiction, contradicted_claims
from auditor.ledger.model import (
    Entry,
    FactRef,
    FactType,
    Family,
    Provenance,
    Query,
    Reading,
    Scope,
    SubjectFact,
)

__all__ = [
    "Contradiction",
    "Entry",
    "FactRef",
    "FactType",
    "Family",
    "Provenance",
    "Query",
    "Reading",
    "Scope",
    "SubjectFact",
    "SubjectView",
    "age_on",
    "answer",
    "contradicted_claims",
    "normalise",
]
