import threading

import pytest

from void_server.pipelines.frame_pool import ordered_map


@pytest.mark.parametrize("workers", [1, 3])
def test_results_come_in_frame_order_with_a_bounded_number_in_flight(workers):
    lock, state = threading.Lock(), {"running": 0, "peak": 0}

    def work(i):
        with lock:
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
        try:
            return i * i
        finally:
            with lock:
                state["running"] -= 1

    assert list(ordered_map(work, 50, workers=workers, ahead=4)) == [i * i for i in range(50)]
    assert state["peak"] <= min(workers, 4)


def test_an_error_in_one_frame_reaches_the_consumer():
    def work(i):
        if i == 7:
            raise ValueError("frame 7 is corrupt")
        return i

    with pytest.raises(ValueError, match="frame 7"):
        list(ordered_map(work, 20, workers=2))
