"""The operator's status helpers: conditions and an object's status."""

from __future__ import annotations

from hookgate.operator.status import merge_conditions, object_status


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "T0", "reason": "A"},
           {"type": "Other", "status": "True", "lastTransitionTime": "T0"}]
    same = merge_conditions(old, [{"type": "Ready", "status": "True", "reason": "B",
                                   "lastTransitionTime": "T1"}])
    assert same[0]["lastTransitionTime"] == "T0" and same[0]["reason"] == "B"
    assert same[1]["type"] == "Other"
    flipped = merge_conditions(old, [{"type": "Ready", "status": "False",
                                      "lastTransitionTime": "T1"}])
    assert flipped[0]["lastTransitionTime"] == "T1"


def test_object_status_names_the_reason_and_generation() -> None:
    from hookgate.model.problems import Problem

    obj = {"metadata": {"generation": 4}}
    status = object_status(obj, [Problem("endpoint 'x' does not exist",
                                         reason="EndpointNotFound", field="spec.endpointRef.name",
                                         hint="create it")], "T")
    (ready,) = status["conditions"]
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == \
        ("False", "EndpointNotFound", 4)
    assert ready["message"] == "spec.endpointRef.name: endpoint 'x' does not exist (create it)"
    assert status["observedGeneration"] == 4
