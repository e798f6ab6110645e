"""Queue order: crashed-and-requeued jobs first, then per-user fairness, then first come, first served."""
from void_server.api.models import JobState
from void_server.jobs.store import JobStore
from void_test_harness import BASE_SPEC_JSON


def _queue(store, owner):
    job_id = store.create(BASE_SPEC_JSON, "testing", "T", owner=owner)
    store.enqueue(job_id)
    return job_id


def _claim_all(store):
    order = []
    while True:
        row = store.claim_next("testing")
        if row is None:
            return order
        order.append(row["owner"])
        store.update(row["id"], state=JobState.succeeded)


def test_one_users_batch_does_not_hold_back_another_users_shot(tmp_path):
    store = JobStore(tmp_path / "db.sqlite3")
    for _ in range(3):
        _queue(store, "ana")
    _queue(store, "ben")
    _queue(store, "ana")
    positions = store.queued_ids()
    assert len(positions) == 5
    # ana's first job, then ben's (ana was served last), then the rest of ana's batch in order
    assert _claim_all(store) == ["ana", "ben", "ana", "ana", "ana"]
    store.close()


def test_without_tokens_the_queue_is_first_come_first_served(tmp_path):
    store = JobStore(tmp_path / "db.sqlite3")
    ids = [_queue(store, None) for _ in range(4)]
    assert store.queued_ids() == ids
    claimed = []
    while True:
        row = store.claim_next("testing")
        if row is None:
            break
        claimed.append(row["id"])
        store.update(row["id"], state=JobState.succeeded)
    assert claimed == ids
    store.close()


def test_a_job_requeued_after_a_crash_goes_first(tmp_path):
    store = JobStore(tmp_path / "db.sqlite3")
    first = _queue(store, "ana")
    store.claim_next("testing")  # running when the server died
    waiting = _queue(store, "ben")
    store.enqueue(first)  # the restart puts it back in the queue
    assert store.queued_ids() == [first, waiting]
    store.close()
