"""The as-of model: precedence, scopes, services, age, duplicates; and a brute-force replay."""

from __future__ import annotations

import itertools
from datetime import date

from hypothesis import example, given, settings
from hypothesis import strategies as st

from auditor.ledger.asof import LOG_LAG_US, SubjectView, age_on, answer, normalise
from auditor.ledger.model import (
    FACT_FAMILY,
    RESTRICTIVE,
    Entry,
    FactRef,
    FactType,
    Family,
    LogTime,
    Query,
    Reading,
    Scope,
)
from tests.unit.ledger.ledgerkit import entry, us

G, W = FactType.CONSENT_GRANTED, FactType.CONSENT_WITHDRAWN


def view(*entries: Entry, minutes: float) -> SubjectView:
    return SubjectView(normalise(entries), us(minutes))


# ---------------------------------------------------------------- precedence in time

def test_no_fact_means_unknown_not_false() -> None:
    assert view(minutes=0).consent("marketing") == Reading(None)


def test_a_fact_is_not_in_force_before_its_effective_time() -> None:
    g = entry(G, 10)
    assert view(g, minutes=9.99).consent("marketing").value is None
    assert view(g, minutes=10).consent("marketing").value is True


def test_a_later_withdrawal_ends_consent_from_its_effective_time() -> None:
    g, w = entry(G, 0), entry(W, 60)
    assert view(g, w, minutes=59).consent("marketing") == Reading(True, (g.ref,), g.effective_us)
    assert view(g, w, minutes=60).consent("marketing") == Reading(False, (w.ref,), w.effective_us)


def test_withdrawal_recorded_first_but_effective_later_still_wins_after_its_time() -> None:
    w = entry(W, 60, offset=1, recorded=0)
    g = entry(G, 0, offset=2, recorded=30)
    assert view(g, w, minutes=30).consent("marketing").value is True
    assert view(g, w, minutes=61).consent("marketing").value is False


def test_same_effective_time_the_later_recorded_wins_between_facts_that_say_the_same() -> None:
    early = entry(W, 10, recorded=11, offset=2, scope=Scope("marketing"))
    late = entry(W, 10, recorded=12, offset=1)
    assert view(early, late, minutes=10).consent("marketing").refs == (late.ref,)


def test_same_effective_time_a_withdrawal_wins_over_a_grant_recorded_later() -> None:
    # atkE: two systems' facts with the same effective time; the conservative reading wins (a decision)
    w = entry(W, 10, recorded=11, offset=1)
    g = entry(G, 10, recorded=12, offset=2)
    assert view(g, w, minutes=10).consent("marketing") == Reading(False, (w.ref,), w.effective_us)
    assert view(g, w, minutes=9).consent("marketing").value is None
    later = entry(G, 10.5, offset=3)  # a grant effective even a moment later restores it
    assert view(g, w, later, minutes=11).consent("marketing").value is True


def test_same_effective_and_recorded_time_a_withdrawal_wins_whatever_the_log_position() -> None:
    g = entry(G, 10, offset=7)
    w = entry(W, 10, offset=8)
    assert view(w, g, minutes=10).consent("marketing").value is False
    g2 = entry(G, 10, offset=9)
    assert view(w, g, g2, minutes=10).consent("marketing").value is False


def test_same_effective_time_the_restrictive_fact_wins_in_every_family() -> None:
    pairs = [(FactType.MARKETING_OPT_IN, FactType.MARKETING_OPT_OUT, "opted_out", True),
             (FactType.GUARDIAN_CONSENT_GRANTED, FactType.GUARDIAN_CONSENT_WITHDRAWN, "guardian_consent", False),
             (FactType.ACCOUNT_REOPENED, FactType.ACCOUNT_CLOSED, "account_closed", True),
             (FactType.DELETION_CANCELLED, FactType.DELETION_REQUESTED, "deletion_requested", True)]
    for permissive, restrictive, question, value in pairs:
        r = entry(restrictive, 10, recorded=10, offset=1)
        p = entry(permissive, 10, recorded=20, offset=2)
        v = view(p, r, minutes=10)
        ask = getattr(v, question)
        got = ask("marketing") if question in ("opted_out", "guardian_consent") else ask()
        assert got.value is value, question
    start = entry(FactType.SERVICE_STARTED, 10, recorded=10, offset=1, service="s1")
    end = entry(FactType.SERVICE_ENDED, 10, recorded=5, offset=0, service="s1")
    assert view(start, end, minutes=10).service_active("marketing").value is False


def test_a_repeated_fact_id_is_applied_once_first_in_the_log_wins() -> None:
    first = entry(G, 10, offset=5, fact_id="dup")
    again = first._replace(offset=9, recorded_us=first.recorded_us + 1)  # a producer retry, restamped
    hist = normalise([again, first])
    assert hist == (first,)
    other = entry(W, 20, offset=9, fact_id="dup")  # the same id saying something else (attlg): a fact too
    hist = normalise([other, first])
    assert hist == (first, other)
    assert answer(hist, us(30), Query(Family.CONSENT, "marketing")).value is False


# ---------------------------------------------------------------- scopes

def test_scope_filters_purpose_and_recipient() -> None:
    s = Scope("marketing", "business_partner", "acme")
    assert s.covers("marketing", "business_partner", "acme")
    assert not s.covers("analytics", "business_partner", "acme")
    # the id names the recipient: an event calling acme an affiliate is still about acme (atkE)
    assert s.covers("marketing", "affiliate", "acme")
    assert not Scope("marketing", "business_partner").covers("marketing", "affiliate", "acme")
    assert not s.covers("marketing", "business_partner", "globex")
    assert not s.covers("marketing", None, None)  # our own processing has no recipient
    assert Scope().covers("anything", None, None)
    assert Scope("marketing").covers("marketing", "business_partner", "acme")


def test_purpose_consent_covers_own_use_and_disclosure_for_that_purpose_only() -> None:
    g = entry(G, 0, scope=Scope("marketing"))
    v = view(g, minutes=1)
    assert v.consent("marketing").value is True
    assert v.consent("marketing", "business_partner", "acme").value is True
    assert v.consent("analytics").value is None


def test_recipient_scoped_consent_does_not_cover_own_processing() -> None:
    g = entry(G, 0, scope=Scope(recipient_type="business_partner"))
    v = view(g, minutes=1)
    assert v.consent("marketing", "business_partner", "acme").value is True
    assert v.consent("marketing").value is None
    assert v.consent("marketing", "affiliate", "x").value is None


def test_a_later_broad_withdrawal_ends_an_earlier_narrow_grant() -> None:
    narrow = entry(G, 0, scope=Scope("marketing", "business_partner", "acme"))
    broad = entry(W, 10, scope=Scope("marketing"))
    assert view(narrow, broad, minutes=11).consent("marketing", "business_partner", "acme").value is False


def test_a_later_narrow_grant_restores_consent_for_that_recipient_only() -> None:
    broad = entry(W, 0, scope=Scope("marketing"))
    narrow = entry(G, 10, scope=Scope("marketing", "business_partner", "acme"))
    v = view(broad, narrow, minutes=11)
    assert v.consent("marketing", "business_partner", "acme").value is True
    assert v.consent("marketing", "business_partner", "globex").value is False
    assert v.consent("marketing").value is False


def test_unscoped_fact_covers_every_question_of_its_family_only() -> None:
    w = entry(W, 0)
    v = view(w, minutes=1)
    assert v.consent("analytics", "bank", "b").value is False
    assert v.opted_out("marketing").value is None
    assert v.guardian_consent("marketing").value is None


def test_opt_out_and_opt_in() -> None:
    out = entry(FactType.MARKETING_OPT_OUT, 0)
    back = entry(FactType.MARKETING_OPT_IN, 30, scope=Scope(recipient_id="acme"))
    v = view(out, back, minutes=31)
    assert v.opted_out("marketing").value is True
    assert v.opted_out("marketing", "business_partner", "acme").value is False


def test_a_marketing_consent_is_the_latest_word_on_the_opt_out_too() -> None:
    """attperm: opted out in January, consented to one partner's offers in March: for that partner
    she is no longer opted out (thisproduct 2.C's prior consent); a withdrawal later opts her out
    again, and at a tie the opt-out wins. Unscoped or other-purpose consents say nothing of it."""
    out = entry(FactType.MARKETING_OPT_OUT, 0)
    grant = entry(G, 30, scope=Scope("marketing", recipient_id="acme"))
    v = view(out, grant, minutes=31)
    assert v.opted_out("marketing", "business_partner", "acme").value is False
    assert v.opted_out("marketing", "business_partner", "acme").refs == (grant.ref,)
    assert v.opted_out("marketing").value is True  # Inper's own marketing: the grant names acme
    assert v.consent("marketing", "business_partner", "acme").value is True
    withdrawn = entry(W, 40, scope=Scope("Marketing"))
    assert view(out, grant, withdrawn, minutes=41).opted_out("marketing", "business_partner", "acme").value is True
    assert view(grant, withdrawn, minutes=41).opted_out("marketing").value is True  # no opt-out fact at all
    tie = entry(FactType.MARKETING_OPT_OUT, 30, scope=Scope("marketing"))
    assert view(grant, tie, minutes=31).opted_out("marketing", "business_partner", "acme").value is True
    for other in (entry(G, 30), entry(G, 30, scope=Scope("analytics")), entry(G, 30, scope=Scope(recipient_id="acme"))):
        assert view(out, other, minutes=31).opted_out("marketing", "business_partner", "acme").value is True
    assert view(entry(FactType.MARKETING_OPT_OUT, 0), minutes=1).consent("marketing").value is None


def test_guardian_consent() -> None:
    g = entry(FactType.GUARDIAN_CONSENT_GRANTED, 0)
    w = entry(FactType.GUARDIAN_CONSENT_WITHDRAWN, 5)
    assert view(g, w, minutes=4).guardian_consent("registration").value is True
    assert view(g, w, minutes=5).guardian_consent("registration").value is False


# ---------------------------------------------------------------- account, deletion

def test_account_closed_and_reopened() -> None:
    closed = entry(FactType.ACCOUNT_CLOSED, 10)
    reopened = entry(FactType.ACCOUNT_REOPENED, 20)
    assert view(closed, reopened, minutes=5).account_closed().value is None
    assert view(closed, reopened, minutes=15).account_closed() == Reading(True, (closed.ref,), closed.effective_us)
    assert view(closed, reopened, minutes=25).account_closed().value is False


def test_deletion_requested_and_cancelled() -> None:
    req = entry(FactType.DELETION_REQUESTED, 10)
    cancel = entry(FactType.DELETION_CANCELLED, 20)
    assert view(req, cancel, minutes=15).deletion_requested().value is True
    assert view(req, cancel, minutes=20).deletion_requested().value is False


# ---------------------------------------------------------------- services

def test_service_running_between_start_and_end() -> None:
    start = entry(FactType.SERVICE_STARTED, 0, service="joint-1", scope=Scope(recipient_id="acme"))
    end = entry(FactType.SERVICE_ENDED, 60, service="joint-1")
    assert view(start, end, minutes=-1).service_active(None, "business_partner", "acme").value is None
    assert view(start, end, minutes=30).service_active(None, "business_partner", "acme") == Reading(
        True, (start.ref,), start.effective_us)
    assert view(start, end, minutes=60).service_active(None, "business_partner", "acme") == Reading(
        False, (end.ref,), end.effective_us)
    assert view(start, end, minutes=30).service_active(None, "business_partner", "globex").value is None


def test_one_running_service_is_enough() -> None:
    a = entry(FactType.SERVICE_STARTED, 0, service="a", scope=Scope(recipient_id="acme"))
    a_end = entry(FactType.SERVICE_ENDED, 10, service="a")
    b = entry(FactType.SERVICE_STARTED, 5, service="b", scope=Scope(recipient_id="acme"))
    assert view(a, a_end, b, minutes=20).service_active(None, "x", "acme") == Reading(True, (b.ref,), b.effective_us)


def test_ending_one_service_does_not_end_another() -> None:
    a = entry(FactType.SERVICE_STARTED, 0, service="a")
    b_end = entry(FactType.SERVICE_ENDED, 10, service="b")
    assert view(a, b_end, minutes=20).service_active("delivery").value is True


def test_a_restart_with_a_new_scope_replaces_the_old_scope() -> None:
    first = entry(FactType.SERVICE_STARTED, 0, service="s", scope=Scope(recipient_id="acme"))
    second = entry(FactType.SERVICE_STARTED, 10, service="s", scope=Scope(recipient_id="globex"))
    v = view(first, second, minutes=20)
    assert v.service_active(None, "t", "acme").value is None
    assert v.service_active(None, "t", "globex").value is True


# ---------------------------------------------------------------- age

def test_age_counts_whole_years_by_utc_date() -> None:
    born = date(2008, 3, 1)
    assert age_on(born, us(0)) == 18             # 2026-03-01: the 18th birthday
    assert age_on(date(2008, 3, 2), us(0)) == 17
    assert age_on(date(2026, 3, 2), us(0)) is None  # not born yet


def test_leap_day_birthday_comes_on_the_first_of_march() -> None:
    born = date(2008, 2, 29)
    feb28 = us(-60 * 24)                          # 2026-02-28
    assert age_on(born, feb28) == 17
    assert age_on(born, us(0)) == 18


def test_age_and_minor_from_the_birth_date_in_force() -> None:
    b1 = entry(FactType.BIRTH_DATE, 0, born=date(2000, 1, 1))
    fix = entry(FactType.BIRTH_DATE, 0, recorded=5, born=date(2010, 1, 1))  # correction, same effect
    v = view(b1, fix, minutes=10)
    assert v.age() == Reading(16, (fix.ref,), fix.effective_us)
    assert v.minor(18) == Reading(True, (fix.ref,), fix.effective_us)
    assert view(minutes=10).minor(18).value is None


def test_provenance_lists_the_facts_that_decided_answers() -> None:
    g, w = entry(G, 0, offset=3), entry(FactType.MARKETING_OPT_OUT, 0, offset=8)
    v = SubjectView(normalise([g, w]), us(1), partition=4, through_offset=10)
    v.consent("marketing")
    v.opted_out("marketing")
    v.account_closed()
    p = v.provenance()
    assert (p.partition, p.through_offset, p.fact_offsets) == (4, 10, (3, 8))
    assert [q.family for q, _ in v.reads] == [Family.CONSENT, Family.OPT_OUT, Family.ACCOUNT_CLOSED]
    assert "u-" not in repr(v)


# ---------------------------------------------------------------- brute force

PURPOSES = ["marketing", "analytics"]
RTYPES = ["business_partner", "affiliate"]
RIDS = ["acme", "globex"]
UNIVERSE = [Query(f, p, t, i) for f in (Family.CONSENT, Family.OPT_OUT, Family.GUARDIAN_CONSENT,
                                        Family.SERVICE_ACTIVE)
            for p, t, i in itertools.product([None, *PURPOSES], [None, *RTYPES], [None, *RIDS])]
UNSCOPED = [Query(Family.BIRTH_DATE), Query(Family.ACCOUNT_CLOSED), Query(Family.DELETION_REQUESTED)]


def brute_force(entries: list[Entry], at_us: int) -> dict[Query, object]:
    """Replay facts forward, in log order for duplicates and precedence order for effect, into a
    materialised state over every question of a small universe, and read it at ``at_us``."""
    seen: set[tuple[object, ...]] = set()
    kept = []
    for e in sorted(entries, key=lambda e: (e.partition, e.offset)):
        said = (e.fact_id, e.type, e.effective_us, e.scope, e.birth_date, e.service_id)  # attlg: what it says
        if said not in seen:
            seen.add(said)
            kept.append(e)
    state: dict[Query, object] = {}
    by_consent: set[Query] = set()  # opt-out questions whose latest word is a marketing consent fact
    services: dict[str, tuple[bool, bool, Scope | None]] = {}  # id -> running, ever started, scope
    def precedence(e: Entry) -> tuple[int, bool, int, int, int]:  # at one effective time the restrictive fact last
        family, value = FACT_FAMILY[e.type]
        return (e.effective_us, RESTRICTIVE.get(family) is value, e.recorded_us, e.partition, e.offset)

    for e in sorted(kept, key=precedence):
        if e.effective_us > at_us:
            break
        family, value = FACT_FAMILY[e.type]
        # the broker's time, or the daemon's bound from the log's order (atl): a lower bound of the log time
        broker = e.logged_by in (LogTime.APPEND, LogTime.BOUND)
        known = max(e.recorded_us, e.logged_us - LOG_LAG_US) if broker else e.recorded_us
        waits = family is Family.BIRTH_DATE or (family in RESTRICTIVE and value is not RESTRICTIVE[family])
        if known > at_us and waits:
            continue  # attlg, ledger: a permissive fact or a birth date is not in force before recorded and logged
        if family is Family.SERVICE_ACTIVE:
            _, started, scope = services.get(e.service_id or "", (False, False, None))
            services[e.service_id or ""] = (True, True, e.scope) if value else (False, started, scope)
        elif family in (Family.CONSENT, Family.OPT_OUT, Family.GUARDIAN_CONSENT):
            for q in UNIVERSE:
                if not (e.scope or Scope()).covers(q.purpose, q.recipient_type, q.recipient_id):
                    continue
                if q.family is family:
                    state[q] = value
                    by_consent.discard(q)
                elif q.family is Family.OPT_OUT and family is Family.CONSENT and e.scope is not None \
                        and e.scope.purpose == "marketing":
                    by_consent.add(q)  # a marketing consent is the latest word on marketing too
        else:
            state[Query(family)] = e.birth_date if family is Family.BIRTH_DATE else value
    for q in by_consent:  # attled, attlg: then the opt-out answer is what the consent question says
        state[q] = not state[Query(Family.CONSENT, q.purpose, q.recipient_type, q.recipient_id)]
    for q in UNIVERSE:
        if q.family is Family.SERVICE_ACTIVE:
            covering = [running for running, started, scope in services.values()
                        if started and (scope or Scope()).covers(q.purpose, q.recipient_type, q.recipient_id)]
            state[q] = True if any(covering) else (False if covering else None)
    return state


scopes = st.one_of(st.none(), st.builds(Scope, st.sampled_from([None, *PURPOSES]), st.sampled_from([None, *RTYPES]),
                                        st.sampled_from([None, *RIDS])))


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    ftype = draw(st.sampled_from(list(FactType)))
    family = FACT_FAMILY[ftype][0]
    scoped = family in (Family.CONSENT, Family.OPT_OUT, Family.GUARDIAN_CONSENT) or ftype is FactType.SERVICE_STARTED
    return Entry(
        effective_us=draw(st.integers(0, 6)) * 1_000_000,
        recorded_us=draw(st.integers(0, 3)) * 1_000_000,
        partition=draw(st.integers(0, 1)),
        offset=draw(st.integers(0, 10_000)),
        fact_id=f"f{draw(st.integers(0, 12))}",
        type=ftype,
        source_system="s",
        scope=draw(scopes) if scoped else None,
        birth_date=draw(st.dates(date(1990, 1, 1), date(1990, 1, 3))) if ftype is FactType.BIRTH_DATE else None,
        service_id=draw(st.sampled_from(["s1", "s2"])) if family is Family.SERVICE_ACTIVE else None,
        logged_us=LOG_LAG_US + draw(st.integers(-1, 7)) * 1_000_000,  # the broker's time less the lag: -1..7 s
        logged_by=draw(st.sampled_from(list(LogTime))),
    )


histories = st.lists(entries(), max_size=14, unique_by=lambda e: (e.partition, e.offset))


def _e(ftype: FactType, second: int, offset: int, scope: Scope | None = None) -> Entry:
    return Entry(second * 1_000_000, 0, 0, offset, f"x{offset}", ftype, "s", scope)


@settings(max_examples=400, deadline=None)
@given(histories, st.integers(-1, 7))
@example([_e(G, 1, 1, Scope("marketing")), _e(W, 2, 2), _e(G, 3, 3)], 4)  # attlg: the re-grant restores it
@example([_e(W, 1, 1, Scope("marketing")), _e(G, 2, 2, Scope(recipient_type="affiliate"))], 3)
def test_as_of_answer_equals_a_brute_force_replay(history: list[Entry], second: int) -> None:
    at_us = second * 1_000_000
    expected = brute_force(history, at_us)
    normal = normalise(history)
    for q in UNIVERSE + UNSCOPED:
        assert answer(normal, at_us, q).value == expected.get(q), q


@settings(max_examples=200, deadline=None)
@given(histories, st.integers(-1, 7), st.randoms(use_true_random=False))
def test_answers_do_not_depend_on_arrival_order(history: list[Entry], second: int, rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(history)
    rnd.shuffle(shuffled)
    a, b = normalise(history), normalise(shuffled)
    assert a == b
    for q in UNIVERSE[::7] + UNSCOPED:
        assert answer(a, second * 1_000_000, q) == answer(b, second * 1_000_000, q)


@settings(max_examples=200, deadline=None)
@given(histories, st.integers(-1, 7))
def test_every_answer_cites_facts_in_force_that_exist(history: list[Entry], second: int) -> None:
    at_us = second * 1_000_000
    normal = normalise(history)
    refs = {e.ref: e for e in normal}
    for q in UNIVERSE + UNSCOPED:
        r = answer(normal, at_us, q)
        assert (r.value is None) == (r.refs == ())
        for ref in r.refs:
            assert isinstance(ref, FactRef) and ref in refs and refs[ref].effective_us <= at_us
            assert refs[ref].family is q.family or (
                q.family is Family.OPT_OUT and refs[ref].family is Family.CONSENT  # attled, attlg: the consent
                and (refs[ref].scope or Scope()).covers(q.purpose, q.recipient_type, q.recipient_id))  # answer's
