"""``efficientdet serve``: options checked and the model loaded before the port is bound, each
failure one line; the missing extra named."""

import sys

import pytest

from efficientdet.cli import main


@pytest.fixture
def never_binds(monkeypatch):
    """Fails the test if the command gets as far as building the server."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from efficientdet.serve import server

    def server_built(*args, **kwargs):
        raise AssertionError("the server was built (and would bind) after a failure")

    monkeypatch.setattr(server, "server", server_built)


def one_line_error(capsys, words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("efficientdet serve: error: ") and words in err and "\n" not in err, err


def test_a_model_file_that_fails_to_load_stops_before_the_port_is_bound(tmp_path, capsys, never_binds):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken")
    assert main(["serve", "--model", "efficientdet-lite0", "--weights", str(bad), "--port", "8123"]) == 2
    one_line_error(capsys, "broken.safetensors: not a readable safetensors file")


def test_a_missing_onnx_file_stops_before_the_port_is_bound(tmp_path, capsys, never_binds):
    assert main(["serve", "--backend", "onnxruntime", "--weights", str(tmp_path / "none.onnx")]) == 2
    one_line_error(capsys, "none.onnx")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "::"])
def test_binding_beyond_loopback_needs_an_api_key(host, capsys, monkeypatch, never_binds):
    monkeypatch.delenv("EFFICIENTDET_API_KEY", raising=False)
    assert main(["serve", "--host", host]) == 2
    one_line_error(capsys, f"--host {host} is reachable from other machines")


@pytest.mark.parametrize("args, words", [
    (["--max-batch-size", "0"], "max batch size (0)"),
    (["--max-queue", "0"], "max_queue must be a positive number"),
    (["--request-timeout", "nan"], "request_timeout must be a positive number"),
    (["--max-megapixels", "0"], "max megapixels must be a positive number"),
    (["--weights", "coco:nonsense"], "coco:nonsense"),
])
def test_bad_options_are_one_line(args, words, capsys, tmp_path, never_binds):
    assert main(["serve", "--model", "efficientdet-lite0", *args]) == 2
    one_line_error(capsys, words)


def test_a_missing_extra_is_named(monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "fastapi" or m.startswith(("fastapi.", "efficientdet.serve"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi → ImportError
    assert main(["serve"]) == 2
    one_line_error(capsys, "efficientdet serve needs fastapi: pip install 'efficientdet[serve]'")
