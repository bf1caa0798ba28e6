"""The worker's boot-failure exit codes are the ones the supervisor's restart policy knows."""

from __future__ import annotations

from pavis import errors
from pavis.supervisor import slots


def test_the_supervisor_halts_on_the_codes_the_worker_exits_with() -> None:
    import workers.main as worker_main  # loads no gevent: the runtime is imported in run()

    assert worker_main.EXIT_BOOT_FAILED == errors.EXIT_BOOT_FAILED == 70
    assert worker_main.EXIT_ARTIFACT_UNUSABLE == errors.EXIT_ARTIFACT_UNUSABLE == 71
    assert set(slots.BOOT_FAILURE_CODES) == {errors.EXIT_BOOT_FAILED, errors.EXIT_ARTIFACT_UNUSABLE}
