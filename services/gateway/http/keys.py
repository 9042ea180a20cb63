"""What the gateway's aiohttp app carries for its handlers."""

from __future__ import annotations

from aiohttp import web

from libs.bus import Bus
from libs.objects import ObjectStore
from services.gateway.app.authn import Authenticator
from services.gateway.app.oidc import OidcLogin

BUS = web.AppKey("bus", Bus)
STORE = web.AppKey("objects", ObjectStore)
AUTHN = web.AppKey("authn", Authenticator)
LOGIN = web.AppKey("oidc_login", OidcLogin)
