"""plumbing.errors: the one-line messages the CLI prints, and errors that come back from Dask workers."""

import pytest

from plumbing.errors import FeatpipeError, first_line, worker_result


class Done:
    """A finished future: ``result()`` returns ``value`` or raises ``error``, as distributed.Future does."""

    def __init__(self, value=None, error=None):
        self.value, self.error = value, error

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


def test_first_line_of_a_stack_dump_and_of_an_empty_message():
    assert first_line(ValueError("bad shape\n  at line 3\n  at line 9")) == "bad shape"
    assert first_line(KeyError()) == "KeyError"


def test_a_worker_result_passes_through():
    assert worker_result(Done(value=[1, 2])) == [1, 2]


def test_a_featpipe_error_on_a_worker_says_where_it_ran_without_the_workers_traceback():
    with pytest.raises(FeatpipeError, match=r"^on Dask worker tcp://10\.0\.0\.2:4000: part 3 is damaged$") as raised:
        worker_result(Done(error=FeatpipeError("part 3 is damaged")), "Dask worker tcp://10.0.0.2:4000")
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    with pytest.raises(FeatpipeError, match=r"^on a Dask worker: no rows$"):
        worker_result(Done(error=FeatpipeError("no rows")))


def test_any_other_error_on_a_worker_is_a_bug_and_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        worker_result(Done(error=ZeroDivisionError("division by zero")))
