"""The CLI's one client helper and its one TLS option group (controlplane/cli/client.py).

Pure: no process and no server. A channel is made only where a call fails before it is used.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import grpc
import pytest
import typer
from typer.testing import CliRunner

from controlplane.cli import client as cli
from controlplane.cli.main import app
from tokenfab.tls import ClientTLS

TLS_FLAGS = ["--tls-ca", "--tls-cert", "--tls-key", "--tls-server-name"]
TLS_ENV = ["TOKENFAB_TLS_CA", "TOKENFAB_TLS_CERT", "TOKENFAB_TLS_KEY", "TOKENFAB_TLS_SERVER_NAME"]


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `tokenfab up` state dir serving 127.0.0.1:7000, with its PKI and both tokens."""
    monkeypatch.setenv("TOKENFAB_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("TOKENFAB_TOKEN", raising=False)
    (tmp_path / "endpoint").write_text("127.0.0.1:7000\n")
    (tmp_path / "pki").mkdir()
    for name in ("ca.crt", "client-cli.crt", "client-cli.key"):
        (tmp_path / "pki" / name).write_text("pem")
    (tmp_path / "admin-token").write_text("admin-secret\n")
    (tmp_path / "demo-token").write_text("demo-secret\n")
    return tmp_path


# --- error mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (grpc.StatusCode.UNAVAILABLE, cli.EXIT_UNREACHABLE),
        (grpc.StatusCode.PERMISSION_DENIED, cli.EXIT_REFUSED),
        (grpc.StatusCode.UNAUTHENTICATED, cli.EXIT_REFUSED),
        (grpc.StatusCode.INVALID_ARGUMENT, cli.EXIT_REFUSED),
        (grpc.StatusCode.NOT_FOUND, cli.EXIT_REFUSED),
        (grpc.StatusCode.DEADLINE_EXCEEDED, cli.EXIT_REFUSED),
    ],
)
def test_rpc_failure_maps_status_to_message_and_exit_code(code: grpc.StatusCode, exit_code: int) -> None:
    message, got = cli.rpc_failure(code, "why it failed")
    assert message == f"{code.name}: why it failed"
    assert got == exit_code


def test_exit_codes_are_distinct() -> None:
    assert len({cli.EXIT_USAGE, cli.EXIT_REFUSED, cli.EXIT_UNREACHABLE}) == 3


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize(
    ("code", "exit_code"), [(grpc.StatusCode.UNAVAILABLE, 3), (grpc.StatusCode.PERMISSION_DENIED, 2)]
)
def test_a_failed_call_prints_the_status_and_exits(
    state: Path, capsys: pytest.CaptureFixture[str], code: grpc.StatusCode, exit_code: int
) -> None:
    async def refused(stub: Any) -> None:
        raise _rpc_error(code, "not you")

    with pytest.raises(typer.Exit) as exit_:
        cli.Client("127.0.0.1:7001").call(lambda channel: object(), refused)
    assert exit_.value.exit_code == exit_code
    assert capsys.readouterr().err == f"error: {code.name}: not you\n"


def test_the_stub_is_made_on_the_channel_and_its_answer_returned(state: Path) -> None:
    made: list[Any] = []

    def stub_class(channel: Any) -> str:
        made.append(channel)
        return "stub"

    async def fetch(stub: Any) -> str:
        return f"answer from {stub}"

    assert cli.Client("127.0.0.1:7001").call(stub_class, fetch) == "answer from stub"
    assert len(made) == 1
    assert isinstance(made[0], grpc.aio.Channel)


# --- bearer token discovery ------------------------------------------------------------------------


def test_token_flag_wins_over_everything(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENFAB_TOKEN", "from-env")
    assert cli.Client("127.0.0.1:7000", token="from-flag").bearer_token() == "from-flag"


def test_tokenfab_token_wins_over_the_state_dir(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENFAB_TOKEN", "from-env")
    assert cli.Client("127.0.0.1:7000").bearer_token() == "from-env"
    assert cli.Client("10.0.0.9:50051").bearer_token() == "from-env"


def test_the_demos_tokens_go_only_to_the_demo(state: Path) -> None:
    assert cli.Client("127.0.0.1:7000").bearer_token() == "admin-secret"
    assert cli.Client("127.0.0.1:7000", token_file="demo-token").bearer_token() == "demo-secret"
    assert cli.Client("10.0.0.9:50051").bearer_token() is None  # another control plane: nothing


def test_a_required_token_that_is_missing_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKENFAB_STATE_DIR", str(tmp_path / "none"))
    monkeypatch.delenv("TOKENFAB_TOKEN", raising=False)
    client = cli.Client("127.0.0.1:7000", token_file="demo-token", require_token=True)
    with pytest.raises(typer.Exit) as exit_:
        client.bearer_token()
    assert exit_.value.exit_code == cli.EXIT_USAGE
    assert capsys.readouterr().err == "error: no credentials: pass --token or set TOKENFAB_TOKEN\n"


# --- TLS material ---------------------------------------------------------------------------------


def test_flags_name_the_tls_material(state: Path) -> None:
    flags = cli.TLSFlags(Path("/ca"), Path("/crt"), Path("/key"), "cp.example")
    assert flags.resolve("127.0.0.1:7000") == ClientTLS(Path("/ca"), Path("/crt"), Path("/key"), "cp.example")


def test_the_demos_pki_is_found_for_the_demos_address_only(state: Path) -> None:
    pki = state / "pki"
    found = cli.NO_TLS_FLAGS.resolve("127.0.0.1:7000")
    assert found == ClientTLS(pki / "ca.crt", pki / "client-cli.crt", pki / "client-cli.key", None)
    assert cli.NO_TLS_FLAGS.resolve("10.0.0.9:50051") is None
    assert cli.NO_TLS_FLAGS.resolve() is None  # no address (the agent): only what the flags name


def test_a_client_cert_without_a_ca_is_refused_by_name(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as exit_:
        cli.TLSFlags(cert=Path("/crt"), key=Path("/key")).resolve("127.0.0.1:7000")
    assert exit_.value.exit_code == cli.EXIT_USAGE
    assert "--tls-cert/--tls-key need --tls-ca" in capsys.readouterr().err


# --- the option group -----------------------------------------------------------------------------


def test_the_group_takes_the_place_of_the_tls_parameter() -> None:
    seen: list[cli.TLSFlags] = []

    def command(
        node: str, address: str = "a", tls: cli.TLSFlags = cli.NO_TLS_FLAGS, verbose: bool = False
    ) -> None:
        seen.append(tls)

    wrapped = cli.tls_options(command)
    names = list(inspect.signature(wrapped).parameters)
    assert names == ["node", "address", "tls_ca", "tls_cert", "tls_key", "tls_server_name", "verbose"]
    wrapped("n1", tls_ca=Path("/ca"), tls_server_name="cp")
    assert seen == [cli.TLSFlags(ca=Path("/ca"), server_name="cp")]
    assert wrapped.__doc__ == command.__doc__


def test_a_command_without_a_tls_parameter_is_refused() -> None:
    def command(address: str = "a") -> None:
        pass

    with pytest.raises(TypeError, match="tls_options needs a `tls: TLSFlags` parameter"):
        cli.tls_options(command)


def _commands(group: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    found = {path: group}
    for name, sub in getattr(group, "commands", {}).items():
        found.update(_commands(sub, (*path, name)))
    return found


OPERATOR_COMMANDS = {
    ("nodes",), ("cordon",), ("uncordon",), ("agent",), ("drain",), ("events",), ("audit",),
    ("lease", "revoke"), ("lease", "extend"),
    ("autoscaler", "status"), ("autoscaler", "history"), ("autoscaler", "mode"),
}  # fmt: skip


def test_every_command_that_dials_the_control_plane_has_the_same_tls_group() -> None:
    commands = _commands(typer.main.get_command(app))
    with_tls = set()
    for path, command in commands.items():
        options = {opt: p for p in getattr(command, "params", []) for opt in p.opts}
        if "--tls-ca" not in options:
            continue
        with_tls.add(path)
        group = [options[flag] for flag in TLS_FLAGS]
        assert [p.envvar for p in group] == TLS_ENV, path
        assert [p.default for p in group] == [None] * 4, path
        names = [p.name for p in command.params]
        at = names.index("tls_ca")
        assert names[at : at + 4] == ["tls_ca", "tls_cert", "tls_key", "tls_server_name"], path
        assert names[at - 1] == "address", path  # the group follows --address, as it always did
    assert with_tls == OPERATOR_COMMANDS


def test_request_commands_take_a_token_and_no_tls_flags() -> None:
    commands = _commands(typer.main.get_command(app))
    for path in [("request", "create"), ("request", "list"), ("request", "watch"), ("replicas",)]:
        options = {opt: p for p in commands[path].params for opt in p.opts}
        assert options["--token"].envvar == "TOKENFAB_TOKEN"
        assert "--tls-ca" not in options


def test_bad_tls_flags_fail_before_anything_is_dialled(state: Path) -> None:
    result = CliRunner().invoke(app, ["cordon", "n1", "--address", "127.0.0.1:7000", "--tls-key", "/key"])
    assert result.exit_code == cli.EXIT_USAGE
    assert "error: --tls-cert/--tls-key need --tls-ca" in result.output
