"""Commands and queries over NATS request/reply.

A service serves ``<kind>.<service>.<Name>`` (kind is ``cmd`` or ``qry``) in
the queue group ``<service>``, so any number of replicas share the load.
Requests and replies are protobuf messages. Errors travel back as the
``Pach-Error`` header (``libs.errors.to_wire``) and are raised again on the
caller's side as the same typed error.

Headers on a request: ``Pach-Principal`` (who asks), ``Pach-Request-Id``,
and the W3C trace context, so a handler's span continues the caller's trace.
"""

from __future__ import annotations

from libs.bus.bus import Bus, Context, Handler, kind_for
from libs.bus.limits import SubjectTooLong, check_publish, guard

__all__ = ["Bus", "Context", "Handler", "SubjectTooLong", "check_publish", "guard", "kind_for"]
