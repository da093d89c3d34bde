import pytest

from rpcapp.errors import RemoteError


def test_add(client, worker):
    assert client.call("calculator.add", 10, 5) == 15


def test_divide_by_zero_is_remote_error(client, worker):
    with pytest.raises(RemoteError) as info:
        client.call("calculator.divide", 1, 0)
    assert info.value.remote_type == "ZeroDivisionError"


def test_process_worker(client, processes, wait_live):
    processes.start("--service", "calculator")
    wait_live(client, "calculator", 1)
    assert client.call("calculator.multiply", 6, 7) == 42
