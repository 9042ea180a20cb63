"""libs.lean_imports: a service process starts without nats-py's websocket
transport's aiohttp, and gets the real module wherever it is used."""

from __future__ import annotations

import subprocess
import sys


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_service_imports_nats_without_aiohttp() -> None:
    code = (
        "import sys\n"
        "from libs.lean_imports import for_services\n"
        "for_services()\n"
        "import libs.service, services.pfs.entrypoints.nats, nats.aio.transport\n"
        "print(sorted(m for m in ('aiohttp', 'yarl', 'motor', 'pymongo', 'grpc')\n"
        "             if m in sys.modules))\n"
    )
    assert _python(code) == "[]"


def test_nats_websocket_transport_still_gets_the_real_aiohttp() -> None:
    code = (
        "import sys\n"
        "from libs.lean_imports import StandIn, for_services\n"
        "for_services()\n"
        "import nats.aio.transport as t\n"
        "assert isinstance(t.aiohttp, StandIn) and 'aiohttp' not in sys.modules\n"
        "session_type = t.aiohttp.ClientSession\n"  # what the transport reads
        "import aiohttp\n"
        "assert session_type is aiohttp.ClientSession and not isinstance(aiohttp, StandIn)\n"
        "print(aiohttp.WSMsgType.BINARY.name)\n"
    )
    assert _python(code) == "BINARY"


def test_aiohttp_imported_after_nats_is_the_ordinary_module() -> None:
    # the gateway imports aiohttp itself, after nats: it must not get a stand-in
    code = (
        "import sys\n"
        "from libs.lean_imports import StandIn, for_services\n"
        "for_services()\n"
        "import nats\n"
        "from aiohttp import web\n"
        "assert not isinstance(sys.modules['aiohttp'], StandIn)\n"
        "print(web.Application.__module__)\n"
    )
    assert _python(code) == "aiohttp.web_app"


def test_nothing_is_deferred_when_the_importer_is_loaded_already() -> None:
    code = (
        "import sys, nats.aio.transport\n"
        "from libs.lean_imports import for_services\n"
        "for_services()\n"
        "ours = [f for f in sys.meta_path if type(f).__module__ == 'libs.lean_imports']\n"
        "print(type(nats.aio.transport.aiohttp).__name__, ours)\n"
    )
    assert _python(code) == "module []"
