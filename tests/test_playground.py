"""The playground server without a browser: its event stream, its checks, and its resilience."""

from __future__ import annotations

import http.client
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from chainrule import nn
from chainrule.explain import explain
from chainrule.playground import load_csv_data, make_server
from chainrule.playground.session import BUILT_IN
from chainrule.registry import HIDDEN_ACTIVATIONS as ACTIVATIONS
from chainrule.registry import OPTIMIZERS

SMALL = {
    "dataset": "moons",
    "n_samples": 120,
    "hidden": [6, 4],
    "activation": "tanh",
    "optimizer": "adam",
    "lr": 0.03,
    "batch_size": 16,
    "seed": 0,
    "noise": 0.15,
}


@pytest.fixture(scope="module")
def server():
    # pace=0 and frame_interval=0: every epoch as fast as it goes, and a frame after each.
    server = make_server(pace=0, frame_interval=0).start()
    yield server
    server.stop()


@pytest.fixture
def playground(server):
    """The module's server, reset to SMALL and paused."""
    status, answer = post(server, "/api/reset", SMALL)
    assert status == 200, answer
    return server


def request(server, method, path, body=None, headers=None):
    """(status, raw body) of one request; `headers` replace the defaults (Host included)."""
    port = server.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
            headers["Content-Length"] = str(len(body))
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def post(server, path, payload, headers=None):
    status, body = request(server, "POST", path, json.dumps(payload).encode(), headers)
    return status, json.loads(body)


class Stream:
    """A reader of /events: `next()` is the next frame as a dict."""

    def __init__(self, server):
        self.connection = http.client.HTTPConnection(
            "127.0.0.1", server.server_address[1], timeout=10
        )
        self.connection.request("GET", "/events")
        self.socket = self.connection.sock  # the response takes it over from the connection
        self.response = self.connection.getresponse()
        assert self.response.getheader("Content-Type") == "text/event-stream"

    def next(self):
        data = []
        while True:
            line = self.response.readline()
            assert line, "the stream ended"
            if line.startswith(b"data: "):
                data.append(line[6:])
            elif line.strip() == b"" and data:
                return json.loads(b"".join(data))

    def until(self, condition):
        while not condition(frame := self.next()):
            pass
        return frame

    def close(self):
        self.socket.shutdown(socket.SHUT_RDWR)
        self.response.close()


# ---- the stream ----
def test_the_stream_shows_the_loss_falling_while_training(playground):
    stream = Stream(playground)
    first = stream.next()
    assert first["epoch"] == 0 and first["data"]["layers"] == [2, 6, 4, 2]
    post(playground, "/api/start", {})
    last = stream.until(lambda frame: frame["epoch"] >= 60)
    post(playground, "/api/pause", {})
    stream.close()
    assert last["loss"] < 0.5 * first["loss"]
    assert last["val_loss"] < first["val_loss"]


def test_a_watcher_gets_every_epoch_even_when_frames_are_skipped():
    server = make_server(pace=0, frame_interval=0.05).start()
    try:
        stream = Stream(server)
        epochs = stream.next()["history"]["epoch"]
        post(server, "/api/start", {})
        while epochs[-1] < 100:
            epochs += stream.next()["history"]["epoch"]
        post(server, "/api/pause", {})
        stream.close()
    finally:
        server.stop()
    assert epochs == list(range(len(epochs)))


def test_step_trains_exactly_the_epochs_asked_for(playground):
    stream = Stream(playground)
    epochs = stream.next()["history"]["epoch"]
    post(playground, "/api/step", {"epochs": 3})
    while epochs[-1] < 3:  # frames may be merged; the history still lists every epoch
        epochs += stream.next()["history"]["epoch"]
    time.sleep(0.1)
    post(playground, "/api/select", {"sample": 1})  # asks for a fresh frame of the same state
    after = stream.next()
    stream.close()
    assert epochs == [0, 1, 2, 3]
    assert after["epoch"] == 3 and not after["running"]


def _model_of(parameters, sizes):
    """A tanh network of these layer sizes holding the streamed weights."""
    layers = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [nn.Linear(n_in, n_out, dtype=np.float64), nn.Tanh()]
    model = nn.Sequential(*layers[:-1])  # logits: no activation after the last Linear
    model.load_state_dict({name: np.array(value) for name, value in parameters.items()})
    return model


def assert_close_nested(actual, expected, where="chain"):
    """Equal structure and text; numbers equal to rel 1e-9 (pytest.approx takes no nesting)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), where
        for key in expected:
            assert_close_nested(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close_nested(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12), where
    else:
        assert actual == expected, where


@pytest.mark.parametrize("weight", ["2.weight[1,3]", "0.weight[5,0]", "4.weight[0,2]", "2.bias[2]"])
def test_the_streamed_chain_rule_equals_explain_for_the_same_weights(playground, weight):
    stream = Stream(playground)
    data = stream.next()["data"]
    post(playground, "/api/step", {"epochs": 5})
    stream.until(lambda frame: frame["epoch"] == 5)
    post(playground, "/api/select", {"weight": weight, "sample": 7})
    frame = stream.until(lambda frame: frame.get("inspect", {}).get("weight") == weight)
    stream.close()
    model = _model_of(frame["parameters"], data["layers"])
    X, y = np.array(data["X"]), np.array(data["y"])
    inputs = (X - np.array(data["mean"])) / np.array(data["std"])
    train = np.setdiff1d(np.arange(len(X)), data["val"])
    sample = explain(model, inputs[7], y[7:8], loss="cross_entropy", lr=SMALL["lr"], weight=weight)
    whole = explain(model, inputs[train], y[train], loss="cross_entropy", weight=weight)
    shown = frame["inspect"]
    assert shown["sample"] == 7 and shown["target"] == y[7]
    assert_close_nested(shown["chain"], sample.to_dict()["chains"][0])
    assert shown["sample_loss"] == pytest.approx(sample.loss, rel=1e-12)
    assert shown["grad"] == pytest.approx(whole.chains[0].value, rel=1e-9, abs=1e-15)
    name, index = whole.chains[0].parameter, whole.chains[0].index
    assert shown["value"] == model.state_dict()[name][index]


def test_the_streamed_gradients_are_those_of_the_training_split(playground):
    stream = Stream(playground)
    frame = stream.next()
    stream.close()
    data = frame["data"]
    model = _model_of(frame["parameters"], data["layers"])
    X, y = np.array(data["X"]), np.array(data["y"])
    train = np.setdiff1d(np.arange(len(X)), data["val"])
    whole = explain(
        model, ((X - data["mean"]) / data["std"])[train], y[train], loss="cross_entropy"
    )
    for name, grad in frame["grad"].items():
        np.testing.assert_allclose(grad, whole.grad[name], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize(
    "setting",
    [{"dataset": name} for name in BUILT_IN]
    + [{"activation": name} for name in ACTIVATIONS]
    + [{"optimizer": name} for name in OPTIMIZERS]
    + [{"hidden": []}, {"batch_size": 1000}],
)
def test_every_choice_trains_and_explains(playground, setting):
    post(playground, "/api/reset", {**SMALL, **setting})
    stream = Stream(playground)
    post(playground, "/api/step", {"epochs": 2})
    frame = stream.until(lambda frame: frame["epoch"] == 2 and "inspect" in frame)
    stream.close()
    assert frame["error"] is None and math.isfinite(frame["loss"])
    assert frame["inspect"]["chain"]["status"] in ("agrees", "kink", "tiny")


def test_a_diverging_run_pauses_with_a_reason_and_a_reset_recovers(playground):
    diverging = {
        "dataset": "blobs",
        "hidden": [16] * 6,
        "activation": "gelu",
        "optimizer": "sgd",
        "lr": 10.0,
        "batch_size": 1,
    }
    post(playground, "/api/reset", {**SMALL, **diverging})
    stream = Stream(playground)
    post(playground, "/api/step", {"epochs": 3})
    failed = stream.until(lambda frame: frame["error"] is not None)
    post(playground, "/api/reset", SMALL)
    post(playground, "/api/step", {"epochs": 1})
    recovered = stream.until(lambda frame: frame["epoch"] == 1)
    stream.close()
    assert "learning rate" in failed["error"] and not failed["running"]
    assert failed["loss"] is None  # NaN is sent as null: JSON has no NaN
    assert recovered["error"] is None and math.isfinite(recovered["loss"])


# ---- what the server serves ----
@pytest.mark.parametrize("path", ["/", "/index.html", "/static/app.js", "/static/style.css"])
def test_the_page_and_its_files_are_served(server, path):
    status, body = request(server, "GET", path)
    assert status == 200 and len(body) > 100


@pytest.mark.parametrize(
    "path",
    [
        "/../../etc/passwd",
        "/static/..%2f..%2fserver.py",
        "/static/../server.py",
        "/static/%2e%2e/session.py",
        "/static/app.js/../../server.py",
        "/static/",
        "/server.py",
        "/chainrule/playground/server.py",
        "//etc/passwd",
        "/static//app.js",
        "/static/APP.JS",
    ],
)
def test_paths_outside_the_page_files_are_not_found(server, path):
    status, body = request(server, "GET", path)
    assert status == 404
    assert b"import" not in body and b"root:" not in body


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",
        "127.0.0.1.evil.example:{port}",
        "localhost:{other}",
        "127.0.0.1",
        "",
        "[::1:{port}",
    ],
)
def test_a_foreign_host_header_is_refused(server, host):
    port = server.server_address[1]
    status, _ = request(
        server, "GET", "/", headers={"Host": host.format(port=port, other=port + 1)}
    )
    assert status == 403


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "LOCALHOST:{port}"])
def test_its_own_address_is_accepted_as_host(server, host):
    status, _ = request(
        server, "GET", "/", headers={"Host": host.format(port=server.server_address[1])}
    )
    assert status == 200


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "https://127.0.0.1:{port}"])
def test_a_post_from_a_foreign_origin_is_refused(playground, origin):
    headers = {"Origin": origin.format(port=playground.server_address[1])}
    status, answer = post(playground, "/api/start", {}, headers)
    assert status == 403 and "error" in answer
    assert not playground.session.running


def test_a_post_from_its_own_page_is_accepted(playground):
    origin = f"http://127.0.0.1:{playground.server_address[1]}"
    status, _ = post(playground, "/api/select", {"sample": 3}, {"Origin": origin})
    assert status == 200


# ---- bounds and malformed input ----
@pytest.mark.parametrize(
    "path, payload, named",
    [
        ("/api/reset", {"lr": 0}, "lr"),
        ("/api/reset", {"lr": 1000}, "lr"),
        ("/api/reset", {"lr": "fast"}, "lr"),
        ("/api/reset", {"lr": float("nan")}, "lr"),
        ("/api/reset", {"hidden": [64]}, "hidden"),
        ("/api/reset", {"hidden": [4] * 7}, "hidden"),
        ("/api/reset", {"hidden": "8,8"}, "hidden"),
        ("/api/reset", {"hidden": [0]}, "hidden"),
        ("/api/reset", {"n_samples": 10**9}, "n_samples"),
        ("/api/reset", {"n_samples": 50.5}, "n_samples"),
        ("/api/reset", {"batch_size": 0}, "batch_size"),
        ("/api/reset", {"seed": -1}, "seed"),
        ("/api/reset", {"seed": 2**40}, "seed"),
        ("/api/reset", {"seed": True}, "seed"),
        ("/api/reset", {"noise": 3}, "noise"),
        ("/api/reset", {"dataset": "../../etc/passwd"}, "dataset"),
        ("/api/reset", {"activation": "swish"}, "activation"),
        ("/api/reset", {"optimizer": "lbfgs"}, "optimizer"),
        ("/api/reset", {"epochs": 10}, "epochs"),
        ("/api/step", {"epochs": 10**6}, "epochs"),
        ("/api/select", {"weight": "9.weight[0,0]"}, "weight"),
        ("/api/select", {"weight": "0.weight[99,0]"}, "weight"),
        ("/api/select", {"weight": ["0.weight"]}, "weight"),
        ("/api/select", {"sample": 10**6}, "sample"),
        ("/api/select", {"sample": -1}, "sample"),
    ],
)
def test_out_of_range_settings_get_400_naming_the_setting(playground, path, payload, named):
    status, answer = post(playground, path, payload)
    assert status == 400
    assert named in answer["error"]


def test_a_rejected_setting_leaves_the_run_as_it_was(playground):
    before = playground.session.options()["config"]
    post(playground, "/api/reset", {"lr": 0.5, "hidden": [99]})
    assert playground.session.options()["config"] == before


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{", 400),
        (b'{"lr": }', 400),
        (b"[1, 2]", 400),
        (b"\xff\xfe{", 400),
        (b'"text"', 400),
        (b"x" * 20_000, 413),
    ],
)
def test_malformed_json_gets_an_error_and_the_server_goes_on(playground, body, status):
    answer_status, answer = request(playground, "POST", "/api/reset", body)
    assert answer_status == status and "error" in json.loads(answer)
    assert request(playground, "GET", "/api/options")[0] == 200


def test_a_body_that_is_not_declared_json_gets_415(playground):
    body = b"lr=5"
    status, _ = request(playground, "POST", "/api/reset", body, {"Content-Type": "text/plain"})
    assert status == 415


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00 hello\r\n\r\n",
        b"BREW /pot HTCPCP/1.0\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: " + b"x" * 70_000 + b"\r\n\r\n",
    ],
)
def test_a_garbled_request_gets_400_and_the_server_goes_on(server, garbage):
    with socket.create_connection(server.server_address[:2], timeout=5) as raw:
        raw.sendall(garbage)
        answer = b""
        while chunk := raw.recv(4096):
            answer += chunk
    assert b"400" in answer or b"431" in answer
    assert request(server, "GET", "/api/options")[0] == 200


def _wait_for(condition, timeout=5.0):
    """Whether `condition()` came true within `timeout` seconds. Not asked again once it has: a
    condition can flap (a worker freed for one request is busy again for the next)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_watcher_that_leaves_mid_stream_ends_only_its_own_thread(playground):
    threads = threading.active_count()
    leaving = Stream(playground)
    leaving.next()
    post(playground, "/api/start", {})
    leaving.next()
    leaving.close()  # the tab closes while frames are flowing
    assert _wait_for(lambda: threading.active_count() <= threads)
    staying = Stream(playground)
    frame = staying.until(lambda frame: frame["running"] and frame["epoch"] > 0)
    post(playground, "/api/pause", {})
    staying.close()
    assert frame["loss"] is not None


def test_open_streams_are_limited_and_a_closed_one_frees_its_place(monkeypatch, playground):
    monkeypatch.setattr("chainrule.playground.server.MAX_STREAMS", 2)
    assert _wait_for(lambda: playground.streams == 0)  # earlier tests' streams have ended
    streams = [Stream(playground), Stream(playground)]
    for stream in streams:
        stream.next()
    refused = request(playground, "GET", "/events")[0]
    streams.pop().close()
    assert _wait_for(lambda: playground.streams < 2), playground.streams
    streams.append(Stream(playground))
    for stream in streams:
        stream.close()
    assert refused == 503


# ---- data from a file, and the command ----
def test_a_csv_given_with_data_is_offered_and_trained_on(tmp_path):
    rows = [(x, y, int(x * y > 0)) for x, y in np.random.default_rng(0).uniform(-1, 1, (40, 2))]
    path = tmp_path / "quadrants.csv"
    path.write_text("a,b,label\n" + "".join(f"{x},{y},{label}\n" for x, y, label in rows))
    server = make_server(data=load_csv_data(str(path)), pace=0).start()
    try:
        status, answer = post(server, "/api/reset", {"dataset": "quadrants.csv"})
        stream = Stream(server)
        data = stream.next()["data"]
        stream.close()
    finally:
        server.stop()
    assert status == 200 and answer["config"]["dataset"] == "quadrants.csv"
    np.testing.assert_allclose(data["X"], [row[:2] for row in rows], rtol=1e-6)
    assert data["y"] == [row[2] for row in rows]


def test_a_csv_with_text_labels_names_its_classes_on_the_page(tmp_path):
    rows = [(x, y, "setosa" if x > 0 else "virginica, var") for x, y in np.eye(2).repeat(10, 0)]
    path = tmp_path / "flowers.csv"
    path.write_text("a,b,label\n" + "".join(f'{x},{y},"{label}"\n' for x, y, label in rows))
    server = make_server(data=load_csv_data(str(path)), pace=0).start()
    try:
        post(server, "/api/reset", {"dataset": "flowers.csv"})
        stream = Stream(server)
        data = stream.next()["data"]
        stream.close()
    finally:
        server.stop()
    assert sorted(data["class_names"]) == ["setosa", "virginica, var"]
    assert data["class_names"][data["y"][0]] == rows[0][2]


def test_a_built_in_dataset_names_its_classes_by_index(playground):
    post(playground, "/api/reset", SMALL)
    stream = Stream(playground)
    data = stream.next()["data"]
    stream.close()
    assert data["class_names"] == [f"class {k}" for k in range(data["n_classes"])]


def test_a_csv_without_two_features_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "three.csv"
    path.write_text("".join(f"{i},{i},{i},{i % 2}\n" for i in range(20)))
    with pytest.raises(ValueError, match="2 features"):
        load_csv_data(str(path))


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_the_command_prints_its_address_and_stops_cleanly_on_ctrl_c():
    script = (
        "import argparse, faulthandler, signal, sys; from chainrule.cli import playground; "
        "faulthandler.register(signal.SIGUSR1); "  # where it hangs, should it ever (see below)
        "parser = argparse.ArgumentParser(); playground.register(parser.add_subparsers()); "
        "args = parser.parse_args(['playground', '--no-browser', '--port', '0']); "
        "sys.exit(args.run(args))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline()
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/api/options")
        assert connection.getresponse().status == 200
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=10) == 0
        except subprocess.TimeoutExpired:
            # Seen once in a full run on one busy CPU, never alone: name every thread's frame.
            process.send_signal(signal.SIGUSR1)
            time.sleep(1)
            process.kill()
            pytest.fail(f"still running 10 s after Ctrl-C; its threads:\n{process.stderr.read()}")
        assert "stopped" in process.stdout.read()
    finally:
        process.kill()
        process.stdout.close()
        process.stderr.close()
    assert line.startswith("chainrule playground: http://127.0.0.1:")


# ---- reliability, second pass ----
def test_a_body_nested_beyond_the_recursion_limit_gets_400(playground):
    status, answer = request(playground, "POST", "/api/reset", b"[" * 8000 + b"]" * 8000)
    assert status == 400 and "nested too deeply" in json.loads(answer)["error"]
    assert request(playground, "GET", "/api/options")[0] == 200


@pytest.mark.parametrize("host", ["10.0.0.5:{port}", "127.0.0.2:{port}", "[::1]:{port}"])
def test_an_ip_address_other_than_its_own_is_refused_as_host(server, host):
    headers = {"Host": host.format(port=server.server_address[1])}
    assert request(server, "GET", "/", headers=headers)[0] == 403


@pytest.mark.parametrize(
    ("host", "bound", "address", "allowed"),
    [
        ("[::1]:80", "::1", "::1", True),
        ("localhost:80", "::1", "::1", True),
        ("127.0.0.1:80", "::1", "::1", False),
        ("127.0.0.1:80", "localhost", "127.0.0.1", True),
        ("localhost:80", "192.168.1.5", "192.168.1.5", False),
        ("192.168.1.5:80", "192.168.1.5", "192.168.1.5", True),
        ("192.168.1.9:80", "192.168.1.5", "192.168.1.5", False),
        ("192.168.1.9:80", "0.0.0.0", "0.0.0.0", True),  # bound to every interface on purpose
        ("evil.example:80", "0.0.0.0", "0.0.0.0", False),
    ],
)
def test_host_names_accepted_follow_the_bound_address(host, bound, address, allowed):
    from chainrule.playground.server import host_allowed

    assert host_allowed(host, 80, bound, address) is allowed


def test_the_listen_backlog_is_realistic(server):
    assert server.request_queue_size >= 128


def test_with_every_worker_busy_a_request_gets_503_at_once(monkeypatch):
    monkeypatch.setattr("chainrule.playground.server.MAX_WORKERS", 1)
    server = make_server(pace=0).start()
    try:
        busy = Stream(server)  # an event stream holds the one worker
        busy.next()
        started = time.monotonic()
        status, body = request(server, "GET", "/api/options")
        assert status == 503 and "busy" in json.loads(body)["error"]
        assert time.monotonic() - started < 2
        busy.close()
        assert _wait_for(lambda: request(server, "GET", "/api/options")[0] == 200)
    finally:
        server.stop()
