"""``auth.API`` and ``enterprise.API``: each RPC is forwarded to its service
with the caller's principal; WhoAmI is answered here, from the gateway's
auth view (it is about the caller's token, which only the gateway sees),
and so are GetOIDCLogin and Authenticate with an OIDC ID token in
``github_token`` (the gateway holds the OIDC login, ``app/oidc.py``).
After a call that changes auth or enterprise state, the gateway's view
catches up before the answer goes back (``Authenticator.changed``)."""

from __future__ import annotations

from typing import Any, TypeVar

import grpc.aio
from google.protobuf.message import Message

from libs.api.auth import auth_pb2 as auth
from libs.api.auth import auth_pb2_grpc
from libs.api.enterprise import enterprise_pb2 as ent
from libs.api.enterprise import enterprise_pb2_grpc
from libs.bus import Bus
from services.gateway.app.authn import (
    AUTH_CHANGES,
    ENTERPRISE_CHANGES,
    Authenticator,
    rpc_kind,
)
from services.gateway.app.oidc import OidcLogin
from services.gateway.principal import ask, grpc_token

Ctx = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", bound=Message)


class _Forward:
    def __init__(self, bus: Bus, authn: Authenticator, service: str, changes: frozenset[str]):
        self.bus = bus
        self.authn = authn
        self.service = service
        self.changes = changes

    async def __call__(self, name: str, request: Message, context: Ctx, response: type[R]) -> R:
        kind = rpc_kind(name, self.changes)
        reply = await ask(self.bus, context, self.service, name, request, response, kind=kind)
        if name in self.changes:
            await self.authn.changed()
        return reply


class AuthServicer(auth_pb2_grpc.APIServicer):
    def __init__(self, bus: Bus, authn: Authenticator, oidc: OidcLogin) -> None:
        self.authn = authn
        self.oidc = oidc
        self._forward = _Forward(bus, authn, "auth", AUTH_CHANGES)

    async def GetOIDCLogin(  # type: ignore[override]
        self, request: auth.GetOIDCLoginRequest, context: Ctx
    ) -> auth.GetOIDCLoginResponse:
        url, state = await self.oidc.start()
        return auth.GetOIDCLoginResponse(login_url=url, state=state)

    async def WhoAmI(  # type: ignore[override]
        self, request: auth.WhoAmIRequest, context: Ctx
    ) -> auth.WhoAmIResponse:
        return self.authn.whoami(grpc_token(context))

    async def Activate(  # type: ignore[override]
        self, request: auth.ActivateRequest, context: Ctx
    ) -> auth.ActivateResponse:
        return await self._forward("Activate", request, context, auth.ActivateResponse)

    async def Deactivate(  # type: ignore[override]
        self, request: auth.DeactivateRequest, context: Ctx
    ) -> auth.DeactivateResponse:
        return await self._forward("Deactivate", request, context, auth.DeactivateResponse)

    async def GetConfiguration(  # type: ignore[override]
        self, request: auth.GetConfigurationRequest, context: Ctx
    ) -> auth.GetConfigurationResponse:
        return await self._forward(
            "GetConfiguration", request, context, auth.GetConfigurationResponse
        )

    async def SetConfiguration(  # type: ignore[override]
        self, request: auth.SetConfigurationRequest, context: Ctx
    ) -> auth.SetConfigurationResponse:
        return await self._forward(
            "SetConfiguration", request, context, auth.SetConfigurationResponse
        )

    async def GetAdmins(  # type: ignore[override]
        self, request: auth.GetAdminsRequest, context: Ctx
    ) -> auth.GetAdminsResponse:
        return await self._forward("GetAdmins", request, context, auth.GetAdminsResponse)

    async def ModifyAdmins(  # type: ignore[override]
        self, request: auth.ModifyAdminsRequest, context: Ctx
    ) -> auth.ModifyAdminsResponse:
        return await self._forward("ModifyAdmins", request, context, auth.ModifyAdminsResponse)

    async def Authenticate(  # type: ignore[override]
        self, request: auth.AuthenticateRequest, context: Ctx
    ) -> auth.AuthenticateResponse:
        if request.github_token and not request.one_time_password:
            # 1.7's GitHub token field carries an ID token of the cluster's
            # OIDC provider (not an access token: its audience is unknown).
            _, token = await self.oidc.authenticate(request.github_token)
            return auth.AuthenticateResponse(pach_token=token)
        return await self._forward("Authenticate", request, context, auth.AuthenticateResponse)

    async def Authorize(  # type: ignore[override]
        self, request: auth.AuthorizeRequest, context: Ctx
    ) -> auth.AuthorizeResponse:
        return await self._forward("Authorize", request, context, auth.AuthorizeResponse)

    async def GetScope(  # type: ignore[override]
        self, request: auth.GetScopeRequest, context: Ctx
    ) -> auth.GetScopeResponse:
        return await self._forward("GetScope", request, context, auth.GetScopeResponse)

    async def SetScope(  # type: ignore[override]
        self, request: auth.SetScopeRequest, context: Ctx
    ) -> auth.SetScopeResponse:
        return await self._forward("SetScope", request, context, auth.SetScopeResponse)

    async def GetACL(  # type: ignore[override]
        self, request: auth.GetACLRequest, context: Ctx
    ) -> auth.GetACLResponse:
        return await self._forward("GetACL", request, context, auth.GetACLResponse)

    async def SetACL(  # type: ignore[override]
        self, request: auth.SetACLRequest, context: Ctx
    ) -> auth.SetACLResponse:
        return await self._forward("SetACL", request, context, auth.SetACLResponse)

    async def GetAuthToken(  # type: ignore[override]
        self, request: auth.GetAuthTokenRequest, context: Ctx
    ) -> auth.GetAuthTokenResponse:
        return await self._forward("GetAuthToken", request, context, auth.GetAuthTokenResponse)

    async def ExtendAuthToken(  # type: ignore[override]
        self, request: auth.ExtendAuthTokenRequest, context: Ctx
    ) -> auth.ExtendAuthTokenResponse:
        return await self._forward(
            "ExtendAuthToken", request, context, auth.ExtendAuthTokenResponse
        )

    async def RevokeAuthToken(  # type: ignore[override]
        self, request: auth.RevokeAuthTokenRequest, context: Ctx
    ) -> auth.RevokeAuthTokenResponse:
        return await self._forward(
            "RevokeAuthToken", request, context, auth.RevokeAuthTokenResponse
        )

    async def SetGroupsForUser(  # type: ignore[override]
        self, request: auth.SetGroupsForUserRequest, context: Ctx
    ) -> auth.SetGroupsForUserResponse:
        return await self._forward(
            "SetGroupsForUser", request, context, auth.SetGroupsForUserResponse
        )

    async def ModifyMembers(  # type: ignore[override]
        self, request: auth.ModifyMembersRequest, context: Ctx
    ) -> auth.ModifyMembersResponse:
        return await self._forward("ModifyMembers", request, context, auth.ModifyMembersResponse)

    async def GetGroups(  # type: ignore[override]
        self, request: auth.GetGroupsRequest, context: Ctx
    ) -> auth.GetGroupsResponse:
        return await self._forward("GetGroups", request, context, auth.GetGroupsResponse)

    async def GetUsers(  # type: ignore[override]
        self, request: auth.GetUsersRequest, context: Ctx
    ) -> auth.GetUsersResponse:
        return await self._forward("GetUsers", request, context, auth.GetUsersResponse)

    async def GetOneTimePassword(  # type: ignore[override]
        self, request: auth.GetOneTimePasswordRequest, context: Ctx
    ) -> auth.GetOneTimePasswordResponse:
        return await self._forward(
            "GetOneTimePassword", request, context, auth.GetOneTimePasswordResponse
        )


class EnterpriseServicer(enterprise_pb2_grpc.APIServicer):
    def __init__(self, bus: Bus, authn: Authenticator) -> None:
        self._forward = _Forward(bus, authn, "enterprise", ENTERPRISE_CHANGES)

    async def Activate(  # type: ignore[override]
        self, request: ent.ActivateRequest, context: Ctx
    ) -> ent.ActivateResponse:
        return await self._forward("Activate", request, context, ent.ActivateResponse)

    async def GetState(  # type: ignore[override]
        self, request: ent.GetStateRequest, context: Ctx
    ) -> ent.GetStateResponse:
        return await self._forward("GetState", request, context, ent.GetStateResponse)

    async def Deactivate(  # type: ignore[override]
        self, request: ent.DeactivateRequest, context: Ctx
    ) -> ent.DeactivateResponse:
        return await self._forward("Deactivate", request, context, ent.DeactivateResponse)


def register(
    server: grpc.aio.Server, bus: Bus, authn: Authenticator, oidc: OidcLogin | None = None
) -> None:
    login = oidc if oidc is not None else OidcLogin(None, bus, authn)
    auth_pb2_grpc.add_APIServicer_to_server(AuthServicer(bus, authn, login), server)
    enterprise_pb2_grpc.add_APIServicer_to_server(EnterpriseServicer(bus, authn), server)
