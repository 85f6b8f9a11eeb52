"""The admin cancel's query ids: one spelling per id, everything else refused."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.channels import MAX_ID, RUN, TICKET, parse_query_ref, query_ref


@given(kind=st.sampled_from([RUN, TICKET]), ident=st.integers(1, MAX_ID))
def test_a_query_ref_reads_back(kind, ident):
    assert parse_query_ref(query_ref(kind, ident)) == (kind, ident)


@given(text=st.text(max_size=40))
def test_anything_else_is_refused_or_reads_back_the_same(text):
    parsed = parse_query_ref(text)
    if parsed is not None:  # only a canonical spelling may parse
        assert query_ref(*parsed) == text


@pytest.mark.parametrize("ref", ["run-0", "run-01", "run--1", "run-+1", "run-1.0", "run-", "-1", "run_1", "RUN-1",
                                 "ticket-9223372036854775808", "ticket-99999999999999999999", "run-١", "run-²",
                                 "job-1", "run-1 ", " run-1", "run-1-2"])
def test_malformed_refs_are_refused(ref):
    assert parse_query_ref(ref) is None


def test_refs_out_of_range_cannot_be_made():
    for kind, ident in ((RUN, 0), (TICKET, MAX_ID + 1), ("job", 1)):
        with pytest.raises(ValueError):
            query_ref(kind, ident)
