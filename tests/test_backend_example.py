"""The example backend of docs/backends.md, run as written: built by the factory, answered through the ACS."""

from __future__ import annotations

import itertools
import re
import sys
import types

import pytest

from sipserver.ils import factory
from sipserver.ils.interface import ILSBackend
from sipserver.sip2 import decode, encode, make
from tests.support import ROOT, Hub, Terminal, make_config

MODULE = "sipserver_docs_example_backend"


@pytest.fixture(scope="module")
def example() -> types.ModuleType:
    text = (ROOT / "docs" / "backends.md").read_text()
    section = text[text.index("## Writing and registering a backend") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "docs/backends.md shows no backend"
    module = types.ModuleType(MODULE)
    exec(compile(code.group(1), "docs/backends.md", "exec"), module.__dict__)
    sys.modules[MODULE] = module
    yield module
    del sys.modules[MODULE]


OPTIONS = {
    "type": f"{MODULE}:ListBackend",
    "patrons": {"P1": {"name": "Ann Able", "pin": "1111"}},
    "items": {"I1": "Alpha"},
}


def test_the_factory_builds_it_and_it_is_a_backend(example):
    backend = factory.create_backend("embedded", OPTIONS)
    assert isinstance(backend, example.ListBackend) and isinstance(backend, ILSBackend)
    with pytest.raises(factory.BackendConfigError, match="unknown option 'pins'"):
        factory.create_backend("embedded", {**OPTIONS, "pins": {}})


def test_terminals_look_up_through_it_and_are_refused_changes(example, tmp_path):
    hub = Hub(make_config(tmp_path), factory.create_backend("embedded", OPTIONS))
    term = Terminal(hub)
    assert decode(term.one(encode(make("93", CN="sco", CO="scpass")))).fixed["ok"] == "1"
    sequence = itertools.count()

    def ask(code: str, **fields: str):
        return decode(term.one(encode(make(code, **fields), sequence=str(next(sequence) % 10))))

    status = ask("23", AO="MAIN", AA="P1", AC="", AD="1111")
    assert (status.get("BL"), status.get("CQ"), status.get("AE")) == ("Y", "Y", "Ann Able")
    assert ask("23", AO="MAIN", AA="P1", AC="", AD="0000").get("CQ") == "N"
    information = ask("63", AO="MAIN", AA="P1", AC="", AD="1111", summary="  Y       ")
    assert information.fixed["charged_items_count"] == "0000" and information.get("BL") == "Y"
    assert ask("17", AO="MAIN", AB="I1", AC="").get("AJ") == "Alpha"
    checkout = ask("11", AO="MAIN", AA="P1", AB="I1", AC="", AD="1111")
    assert checkout.fixed["ok"] == "0" and checkout.get("AF")
    assert ask("99", protocol_version="2.00").fixed["online_status"] == "Y"
