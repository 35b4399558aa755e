"""Task states, the transition table, resources and per-task options (``balsam_futures.tasks``)."""

from __future__ import annotations

import math

import pytest

from balsam_futures.tasks import (
    CLAIMABLE,
    FINAL,
    STATE_DESCRIPTIONS,
    TRANSITIONS,
    WATCHED,
    Resources,
    TaskOptions,
    TaskState,
    check_transition,
    outcome_path,
    parse_state,
    sources,
)

pytestmark = pytest.mark.timeout(60)

S = TaskState


# --------------------------------------------------------------------------------------------
# States and transitions
# --------------------------------------------------------------------------------------------


class TestTransitions:
    def test_every_state_has_a_row_and_a_description(self):
        assert set(TRANSITIONS) == set(TaskState)
        assert set(STATE_DESCRIPTIONS) == set(TaskState)
        assert all(STATE_DESCRIPTIONS.values())

    def test_targets_are_states_and_never_the_source(self):
        for state, targets in TRANSITIONS.items():
            assert targets <= set(TaskState)
            assert state not in targets, f"{state} moves to itself"

    @pytest.mark.parametrize("state", sorted(FINAL))
    def test_final_states_have_no_way_out_but_manual_retry(self, state):
        if state is S.FAILED:
            # A retry; one of a task with inputs fetches them again first.
            assert TRANSITIONS[state] == {S.RESTART_READY, S.AWAITING_STAGE_IN}
        elif state is S.KILLED:
            assert TRANSITIONS[state] == {S.RESTART_READY}
        else:
            assert TRANSITIONS[state] == frozenset()

    def test_final_states_are_the_expected_ones(self):
        assert {S.JOB_FINISHED, S.FAILED, S.KILLED, S.CANCELLED} == FINAL

    @pytest.mark.parametrize("state", sorted(CLAIMABLE))
    def test_claimable_states_lead_to_claimed(self, state):
        assert S.CLAIMED in TRANSITIONS[state]
        assert S.RUNNING not in TRANSITIONS[state]  # claimed is not running

    def test_only_claimable_states_are_claimed_and_only_claimed_ones_start(self):
        assert sources(S.CLAIMED) == CLAIMABLE
        assert sources(S.RUNNING) == {S.CLAIMED}

    def test_a_claimed_task_can_be_cancelled_or_given_back(self):
        assert TRANSITIONS[S.CLAIMED] == {S.RUNNING, S.READY, S.RESTART_READY, S.CANCELLED}

    def test_watched_states(self):
        assert {S.RUNNING, S.JOB_FINISHED, S.FAILED, S.KILLED, S.CANCELLED} == WATCHED

    def test_running_is_left_only_by_run_outcomes_or_requeue(self):
        assert TRANSITIONS[S.RUNNING] == {
            S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT, S.KILLED, S.RESTART_READY,
        }

    def test_a_running_task_cannot_be_cancelled(self):
        assert S.RUNNING not in sources(S.CANCELLED)
        assert sources(S.CANCELLED) >= CLAIMABLE

    def test_every_state_is_reachable_from_created(self):
        seen, todo = {S.CREATED}, [S.CREATED]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen == set(TaskState)

    def test_every_non_final_state_can_reach_a_final_one(self):
        for state in set(TaskState) - FINAL:
            seen, todo = {state}, [state]
            while todo:
                for nxt in TRANSITIONS[todo.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            assert seen & FINAL, f"{state} never ends"

    def test_sources(self):
        assert sources(S.CANCELLED) == {S.CREATED, S.AWAITING_PARENTS, S.READY,
                                        S.RESTART_READY, S.CLAIMED, S.AWAITING_STAGE_IN,
                                        S.STAGING_IN}
        assert sources(S.CREATED) == frozenset()

    def test_check_transition(self):
        check_transition(S.READY, S.CLAIMED)
        check_transition(S.CLAIMED, S.RUNNING)
        with pytest.raises(ValueError, match="READY to RUNNING"):
            check_transition(S.READY, S.RUNNING)
        with pytest.raises(ValueError, match="cannot move from JOB_FINISHED to RUNNING"):
            check_transition(S.JOB_FINISHED, S.RUNNING)
        with pytest.raises(ValueError, match="RUNNING to CANCELLED"):
            check_transition(S.RUNNING, S.CANCELLED)

    def test_state_is_its_name_as_a_string(self):
        assert str(S.RUN_DONE) == "RUN_DONE"
        assert S.READY == "READY"


class TestParseState:
    @pytest.mark.parametrize("name", ["READY", "ready", "Run_Done", S.FAILED])
    def test_known_names(self, name):
        assert parse_state(name) is S(str(name).upper())

    @pytest.mark.parametrize("name", ["DONE", "", "RUNNING!", "FINISHED"])
    def test_unknown_name_lists_the_valid_states(self, name):
        with pytest.raises(ValueError) as info:
            parse_state(name)
        message = str(info.value)
        assert repr(name) in message
        for state in TaskState:
            assert state.value in message


# --------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------

RESOURCE_MINIMUMS = {
    "num_nodes": 1,
    "ranks_per_node": 1,
    "threads_per_rank": 1,
    "gpus_per_rank": 0,
    "node_packing_count": 0,
}


class TestResources:
    def test_defaults(self):
        r = Resources()
        assert (r.num_nodes, r.ranks_per_node, r.threads_per_rank, r.gpus_per_rank,
                r.node_packing_count) == (1, 1, 1, 0, 0)

    def test_derived_counts(self):
        r = Resources(num_nodes=3, ranks_per_node=4, threads_per_rank=2, gpus_per_rank=1)
        assert (r.cores_per_node, r.gpus_per_node, r.total_ranks) == (8, 4, 12)

    @pytest.mark.parametrize("field", sorted(RESOURCE_MINIMUMS))
    def test_minimum_is_accepted(self, field):
        assert getattr(Resources(**{field: RESOURCE_MINIMUMS[field]}), field) == \
            RESOURCE_MINIMUMS[field]

    @pytest.mark.parametrize("field", sorted(RESOURCE_MINIMUMS))
    @pytest.mark.parametrize("bad", ["2", 2.0, None, True])
    def test_wrong_type_names_the_field(self, field, bad):
        with pytest.raises(TypeError, match=field) as info:
            Resources(**{field: bad})
        assert "int" in str(info.value)

    @pytest.mark.parametrize("field", sorted(RESOURCE_MINIMUMS))
    def test_below_minimum_names_the_field_and_the_minimum(self, field):
        minimum = RESOURCE_MINIMUMS[field]
        with pytest.raises(ValueError) as info:
            Resources(**{field: minimum - 1})
        message = str(info.value)
        assert field in message
        assert f">= {minimum}" in message
        assert str(minimum - 1) in message

    def test_resources_are_immutable(self):
        r = Resources()
        with pytest.raises(AttributeError):
            r.num_nodes = 2


# --------------------------------------------------------------------------------------------
# TaskOptions
# --------------------------------------------------------------------------------------------


class TestTaskOptions:
    def test_defaults(self):
        o = TaskOptions()
        assert (o.name, o.max_retries, o.timeout, o.auto_timeout_retry, o.priority) == (
            None, 0, None, True, 0)
        assert dict(o.tags) == {} and dict(o.data) == {}
        assert o.resources == Resources()

    def test_defaults_are_not_shared(self):
        assert TaskOptions().tags is not TaskOptions().tags

    @pytest.mark.parametrize("tags", [{"a": 1}, {1: "a"}, {"a": None}, [("a", "b")], "a=b"])
    def test_tags_must_map_str_to_str(self, tags):
        with pytest.raises(TypeError, match="tags"):
            TaskOptions(tags=tags)

    def test_tags_accepted(self):
        assert dict(TaskOptions(tags={"exp": "xpcs", "run": "3"}).tags) == {
            "exp": "xpcs", "run": "3"}

    @pytest.mark.parametrize("data", [{"x": object()}, {"x": {1, 2}}, {"x": b"bytes"}])
    def test_data_must_be_json_serializable(self, data):
        with pytest.raises(TypeError, match="JSON"):
            TaskOptions(data=data)

    def test_data_must_be_a_mapping(self):
        with pytest.raises(TypeError, match="data"):
            TaskOptions(data=[1, 2])

    def test_data_accepted(self):
        data = {"lr": 0.1, "layers": [1, 2], "meta": {"ok": True, "none": None}}
        assert dict(TaskOptions(data=data).data) == data

    @pytest.mark.parametrize("timeout", [0, -1, -0.5, math.inf, math.nan])
    def test_timeout_must_be_positive_and_finite(self, timeout):
        with pytest.raises(ValueError, match="timeout must be > 0"):
            TaskOptions(timeout=timeout)

    @pytest.mark.parametrize("timeout", ["10", True, [1]])
    def test_timeout_must_be_a_number(self, timeout):
        with pytest.raises(TypeError, match="timeout"):
            TaskOptions(timeout=timeout)

    @pytest.mark.parametrize("timeout", [0.001, 1, 3600.5])
    def test_timeout_accepted(self, timeout):
        assert TaskOptions(timeout=timeout).timeout == timeout

    def test_name_must_be_a_string(self):
        with pytest.raises(TypeError, match="name"):
            TaskOptions(name=3)

    def test_resources_must_be_resources(self):
        with pytest.raises(TypeError, match="Resources"):
            TaskOptions(resources={"num_nodes": 2})

    def test_max_retries(self):
        with pytest.raises(ValueError, match="max_retries must be >= 0"):
            TaskOptions(max_retries=-1)
        with pytest.raises(TypeError, match="max_retries"):
            TaskOptions(max_retries=1.5)

    def test_priority(self):
        assert TaskOptions(priority=-5).priority == -5
        with pytest.raises(TypeError, match="priority"):
            TaskOptions(priority="high")

    def test_merged_unknown_option_lists_valid_options(self):
        with pytest.raises(TypeError) as info:
            TaskOptions().merged(retries=3)
        message = str(info.value)
        assert "'retries'" in message
        for name in ("max_retries", "timeout", "tags", "data", "resources", "priority"):
            assert name in message

    def test_merged_merges_tags_and_data_key_by_key(self):
        base = TaskOptions(tags={"a": "1", "b": "2"}, data={"x": 1}, max_retries=1)
        merged = base.merged(tags={"b": "3", "c": "4"}, data={"y": 2}, timeout=5)
        assert dict(merged.tags) == {"a": "1", "b": "3", "c": "4"}
        assert dict(merged.data) == {"x": 1, "y": 2}
        assert (merged.timeout, merged.max_retries) == (5, 1)
        # The original is unchanged.
        assert dict(base.tags) == {"a": "1", "b": "2"}
        assert dict(base.data) == {"x": 1}
        assert base.timeout is None

    def test_merged_replaces_other_options(self):
        merged = TaskOptions(resources=Resources(num_nodes=2)).merged(
            resources=Resources(num_nodes=4), name="n")
        assert merged.resources.num_nodes == 4
        assert merged.name == "n"

    def test_merged_validates_the_result(self):
        with pytest.raises(ValueError, match="timeout"):
            TaskOptions().merged(timeout=-1)
        with pytest.raises(TypeError, match="tags"):
            TaskOptions().merged(tags={"a": 1})


# --------------------------------------------------------------------------------------------
# outcome_path: the retry policy
# --------------------------------------------------------------------------------------------

D, E, T, K = S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT, S.KILLED
RESTART, FAILED = S.RESTART_READY, S.FAILED

OUTCOME_TABLE = [
    # run_state, num_restarts, max_retries, auto_timeout_retry -> path
    (D, 0, 0, True, (D, S.JOB_FINISHED)),
    (D, 5, 1, False, (D, S.JOB_FINISHED)),
    (K, 0, 3, True, (K,)),
    (K, 0, 0, False, (K,)),
    (E, 0, 0, True, (E, FAILED)),
    (E, 0, 1, True, (E, RESTART)),
    (E, 0, 1, False, (E, RESTART)),
    (E, 1, 1, True, (E, FAILED)),
    (E, 2, 3, True, (E, RESTART)),
    (E, 3, 3, True, (E, FAILED)),
    (T, 0, 0, True, (T, RESTART)),   # a time-out is retried once even with max_retries=0
    (T, 1, 0, True, (T, FAILED)),
    (T, 0, 0, False, (T, FAILED)),
    (T, 0, 3, False, (T, FAILED)),
    (T, 2, 3, True, (T, RESTART)),
    (T, 3, 3, True, (T, FAILED)),
]


@pytest.mark.parametrize("run_state, num_restarts, max_retries, auto, expected", OUTCOME_TABLE)
def test_outcome_path(run_state, num_restarts, max_retries, auto, expected):
    path = outcome_path(run_state, num_restarts, max_retries, auto)
    assert path == expected
    # Every path is a chain of allowed moves out of RUNNING, ending in a state the launcher
    # leaves alone.
    previous = S.RUNNING
    for state in path:
        check_transition(previous, state)
        previous = state
    assert path[-1] in FINAL | {RESTART}


@pytest.mark.parametrize("state", [S.RUNNING, S.READY, S.JOB_FINISHED, S.FAILED,
                                   S.RESTART_READY])
def test_outcome_path_rejects_states_that_do_not_end_a_run(state):
    with pytest.raises(ValueError, match="not how a run ends"):
        outcome_path(state, 0, 0, True)
