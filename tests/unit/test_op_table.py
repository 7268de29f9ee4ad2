"""The op table: the protocol's ops, the daemon's routes, the clients and the docs agree."""

from __future__ import annotations

import importlib.util
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Awaitable
from pathlib import Path

import msgspec
import pytest

from gastown_client import protocol
from gastown_client.aclient import AsyncClient
from gastown_client.client import Client
from gastown_client.operations import Operation, Operations
from gastownd import ops
from gastownd.server.socket_server import FollowUp

DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_every_op_of_the_union_is_in_the_table_with_its_result() -> None:
    union = typing.get_args(protocol.RequestUnion)
    assert [op.request for op in protocol.OP_TABLE.values()] == list(union)
    assert set(protocol.OP_TABLE) == protocol.OPS
    for name, op in protocol.OP_TABLE.items():
        assert op.request.__struct_config__.tag == name
        assert issubclass(op.result, msgspec.Struct), name
        assert protocol.RESULT_TYPES[op.request] is op.result


def test_a_request_that_names_no_result_is_refused() -> None:
    class Nameless(protocol.Request, tag="nameless"):
        pass

    with pytest.raises(TypeError, match="does not name its result"):
        protocol.op_table.result_type(Nameless)  # type: ignore[arg-type]


def test_the_daemon_routes_exactly_the_protocols_ops() -> None:
    assert set(ops.ROUTES) == {op.request for op in protocol.OP_TABLE.values()}
    for request, route in ops.ROUTES.items():
        assert (route.inline is None) != (route.task is None), request.__name__


def test_a_plain_handler_is_answered_in_line_and_a_coroutine_in_a_task() -> None:
    for request, route in ops.ROUTES.items():
        assert (route.task is not None) == inspect.iscoroutinefunction(route.handler), request


def handler_module(source: str) -> types.ModuleType:
    """A module of handlers, as the daemon's are written (postponed annotations)."""
    module = types.ModuleType("fake_handlers")
    header = (
        "from __future__ import annotations\n"
        "from gastown_client.protocol import Hello, HelloResult, Ping, PingResult\n"
        "from gastownd.process.daemon import Daemon\n"
        "from gastownd.server.socket_server import Connection, Reply\n"
    )
    exec(compile(header + textwrap.dedent(source), "fake_handlers", "exec"), vars(module))
    return module


# The op table the fake handler modules are matched against.
TWO_OPS = {name: protocol.OP_TABLE[name] for name in ("ping", "hello")}


def test_handlers_are_found_by_their_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    module = handler_module(
        """
        def ping(daemon: Daemon, request: Ping, reply: Reply) -> None: ...
        async def any_name(daemon: Daemon, request: Hello, conn: Connection) -> HelloResult: ...
        def helper(request: Hello) -> None: ...  # no daemon: not a handler
        def scoped(daemon: Daemon, request: Hello, flt: int) -> None: ...  # takes more
        def _private(daemon: Daemon, request: Hello) -> None: ...
        def needs_more(daemon: Daemon, request: Hello, *, x: int) -> None: ...  # no default
        def any_more(daemon: Daemon, request: Hello, *args: int) -> None: ...
        """
    )
    monkeypatch.setattr(ops, "OP_TABLE", TWO_OPS)
    routes = ops.find_routes((module,))
    assert routes[protocol.Ping].handler is module.ping and routes[protocol.Ping].inline
    assert routes[protocol.Hello].handler is module.any_name
    assert routes[protocol.Hello].task is module.any_name
    ping = handler_module("def ping(d: Daemon, r: Ping, *, spool: int | None = None): ...")
    monkeypatch.setattr(ops, "OP_TABLE", {"ping": protocol.OP_TABLE["ping"]})
    assert ops.find_routes((ping,))[protocol.Ping].handler is ping.ping  # defaults: fine


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def ping(daemon: Daemon, request: Ping) -> None: ...", "'hello' .* none"),
        (
            """
            def ping(daemon: Daemon, request: Ping) -> None: ...
            def hello(daemon: Daemon, request: Hello) -> None: ...
            def hello_again(daemon: Daemon, request: Hello, conn: Connection) -> None: ...
            """,
            "'hello' needs exactly one handler, found: .*hello.*hello_again",
        ),
        (
            """
            def ping(daemon: Daemon, request: Ping) -> None: ...
            async def hello(daemon: Daemon, request: Hello, reply: Reply) -> None: ...
            """,
            "a coroutine cannot take ``reply``",
        ),
    ],
)
def test_an_op_without_exactly_one_handler_is_refused_at_import(
    monkeypatch: pytest.MonkeyPatch, source: str, message: str
) -> None:
    module = handler_module(source)
    monkeypatch.setattr(ops, "OP_TABLE", TWO_OPS)
    with pytest.raises(ops.HandlerError, match=message):
        ops.find_routes((module,))


@pytest.mark.parametrize("op", protocol.OP_TABLE.values(), ids=lambda op: op.name)
def test_each_handler_takes_its_request_and_returns_its_result(op: protocol.OpSpec) -> None:
    handler = ops.ROUTES[op.request].handler
    hints = typing.get_type_hints(handler)
    parameters = list(inspect.signature(handler).parameters)
    assert hints[parameters[1]] is op.request, handler.__name__
    returned = hints["return"]
    if typing.get_origin(returned) in (Awaitable, typing.Coroutine):
        returned = typing.get_args(returned)[-1]
    if returned is FollowUp:  # a subscription: its result, then a stream
        assert op.request is protocol.Subscribe
    elif returned is type(None):  # answers through ``reply``
        assert ops.ROUTES[op.request].inline is not None
    else:
        assert returned is op.result, handler.__name__


def test_both_clients_get_the_same_methods_from_one_list() -> None:
    operations = {name for name, value in vars(Operations).items() if isinstance(value, Operation)}
    assert operations <= set(protocol.OP_TABLE)
    for name in operations:
        assert isinstance(getattr(Client, name), Operation)
        assert isinstance(getattr(AsyncClient, name), Operation)
    for name in ("hello", "subscribe", "call", "send", "read_frame"):
        assert callable(getattr(Client, name)) and callable(getattr(AsyncClient, name))


def test_each_clients_method_sends_the_request_of_its_op() -> None:
    """A method is named for its op and builds that op's request: ``call`` then returns the
    op's result on both clients (``RESULT_TYPES``, from the table)."""
    for name, operation in vars(Operations).items():
        if not isinstance(operation, Operation):
            continue
        build = operation.build
        built = build if isinstance(build, type) else typing.get_type_hints(build)["return"]
        assert built is protocol.OP_TABLE[name].request, name


def test_an_operation_keeps_its_builders_signature() -> None:
    client = Client("/nonexistent/gastownd.sock")
    assert list(inspect.signature(client.emit).parameters) == [
        "type",
        "actor",
        "payload",
        "visibility",
    ]
    assert client.emit is client.emit  # built once per client


def _documented_ops() -> tuple[set[str], dict[str, str]]:
    text = DOCS.read_text(encoding="utf-8")
    ops_section = text[text.index("\n## Ops\n") : text.index("\n## Compatibility rules\n")]
    headings = set(re.findall(r"^### (\w+)$", ops_section, re.M))
    rows = dict(re.findall(r"^\| \[`(\w+)`\]\(#\w+\) \| [^|]+ \| ([^|]+?) \|$", ops_section, re.M))
    return headings, rows


def test_the_docs_describe_every_op_and_nothing_else() -> None:
    headings, rows = _documented_ops()
    assert headings == set(protocol.OP_TABLE)
    assert set(rows) == set(protocol.OP_TABLE)


def test_the_docs_say_which_ops_are_answered_in_line() -> None:
    _, rows = _documented_ops()
    for name, answered in rows.items():
        route = ops.ROUTES[protocol.OP_TABLE[name].request]
        assert answered.startswith("in line") == (route.inline is not None), name


# ---------------------------------------------------------------- the generated docs


def load_generator() -> types.ModuleType:
    path = Path(__file__).resolve().parents[2] / "scripts" / "gen_protocol_docs.py"
    spec = importlib.util.spec_from_file_location("gen_protocol_docs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = load_generator()


def test_the_docs_are_up_to_date_with_the_op_table() -> None:
    """Fails when a struct, a field's docstring or an op changed without `make docs`."""
    text = DOCS.read_text(encoding="utf-8")
    assert GENERATOR.render(text, protocol.OP_TABLE, ops.ROUTES) == text, "run `make docs`"


class Frobnicate(protocol.Returning["FrobnicateResult"], tag="frobnicate"):
    """Frobnicate the town, twice if asked.

    A second paragraph, kept.
    """

    times: int = 1
    """How many times: 1 or 2."""
    target: str | None = None  # a comment beside is a meaning too


class FrobnicateResult(msgspec.Struct, kw_only=True):
    frobbed: list[str]


def test_an_added_op_gets_its_row_and_section_and_the_prose_stays() -> None:
    text = DOCS.read_text(encoding="utf-8")
    frob = protocol.OpSpec("frobnicate", Frobnicate, protocol.op_table.result_type(Frobnicate))
    table = {**protocol.OP_TABLE, "frobnicate": frob}
    routes = {**ops.ROUTES, Frobnicate: ops.route_of(lambda d, r: None, None)}
    new = GENERATOR.render(text, table, routes)
    assert "| [`frobnicate`](#frobnicate) | frobnicate the town, twice if asked | in line |" in new
    section = new[new.index("### frobnicate") :]
    assert "A second paragraph, kept." in section
    assert "| `times` | int | `1` | How many times: 1 or 2. |" in section
    assert "| `target` | string or null | `null` | a comment beside is a meaning too |" in section
    assert "Result `FrobnicateResult`: `frobbed` (list of strings)." in section
    # Taken out again, the page is as it was: the other sections and their prose untouched.
    assert GENERATOR.render(new, protocol.OP_TABLE, ops.ROUTES) == text


@pytest.mark.parametrize("op", protocol.OP_TABLE.values(), ids=lambda op: op.name)
def test_every_request_field_says_what_it_means(op: protocol.OpSpec) -> None:
    """A field's docstring is its line in docs/protocol.md: a new op documents its fields."""
    docs = GENERATOR.field_docs(op.request)
    undocumented = [f.name for f in GENERATOR.struct_fields(op.request) if not docs.get(f.name)]
    assert undocumented == [], f"{op.request.__name__}: give these fields a docstring"


def test_a_request_without_a_docstring_is_refused() -> None:
    class Nameless(protocol.Returning["PingResult"], tag="nameless"):
        pass

    op = protocol.OpSpec("nameless", Nameless, protocol.PingResult)
    with pytest.raises(ValueError, match="Nameless has no docstring"):
        GENERATOR.summary(op)
