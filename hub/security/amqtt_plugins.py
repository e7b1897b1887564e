"""The embedded amqtt broker's lock: an authentication plugin and a topic-ACL plugin.

Both read the password and ACL files `hub.security.broker.write_mosquitto_config` writes (the
same files an external Mosquitto uses), through `ReloadingAccess`: a changed file is in force
within about a second. hub/transport/broker.py loads them when the broker is locked.

- `SiteAuthPlugin` refuses anonymous clients, unknown users and wrong passwords ($7$ hashes
  checked with `verify_password`), and a CONNECT whose last will is on a topic the user may
  not publish to (amqtt publishes wills without asking the topic plugins; Mosquitto accepts
  such a CONNECT and drops the will: either way the will is never published).
- `SiteTopicPlugin` answers amqtt's publish, subscribe and receive checks: a refused publish
  is dropped, a refused subscription gets SUBACK 0x80, and a message is delivered only to
  users allowed to read its topic. A client still connected after its account was removed
  or given a new password may do nothing any more (its login is checked again, once, after
  the files change); Mosquitto disconnects such a client on SIGHUP instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from hub.security.broker import ReloadingAccess, SiteAccess

__all__ = ["SiteAuthPlugin", "SiteTopicPlugin"]

_LOGIN_CHECK = "etp.security.login_checked_against"  # Session.attributes key


@functools.lru_cache(maxsize=4)
def _access(password_file: str, acl_file: str) -> ReloadingAccess:
    """The files' rules, one reader shared by both plugins (each change is parsed once)."""
    if not password_file or not acl_file:
        raise ValueError("the broker lock needs password_file and acl_file")
    return ReloadingAccess(Path(password_file), Path(acl_file))


@dataclass
class LockFiles:
    """Both plugins' configuration: the files hub.security.broker.write_mosquitto_config
    writes."""

    password_file: str = ""
    acl_file: str = ""


class SiteAuthPlugin(BaseAuthPlugin):
    """Only known users with their password; never anonymous."""

    Config = LockFiles

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._rules = _access(self.config.password_file, self.config.acl_file)

    async def authenticate(self, *, session: Session) -> bool:
        """True for a known user, right password and an allowed last-will topic."""
        access = self._rules.current()
        username = session.username
        if not access.authenticate(username, session.password):
            # The user name only: never the password.
            self.context.logger.info("refused login", extra={"username": username or "-"})
            return False
        if session.will_flag and not access.may_publish(username, session.will_topic or ""):
            self.context.logger.info("refused last will topic", extra={"username": username})
            return False
        return True


class SiteTopicPlugin(BaseTopicPlugin):
    """Publish, subscribe and receive only where the ACL file allows."""

    Config = LockFiles

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._rules = _access(self.config.password_file, self.config.acl_file)

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        """True if `session`'s user may do `action` on `topic`."""
        if session is None or not topic:
            return False
        access = self._rules.current()
        username = session.username
        if not self._login_still_valid(session, access):
            return False  # anonymous, or an account removed/rotated while still connected
        if action == Action.PUBLISH:
            return access.may_publish(username, topic)
        if action == Action.SUBSCRIBE:
            return access.may_subscribe(username, topic)
        if action == Action.RECEIVE:
            return access.may_receive(username, topic)
        return False

    @staticmethod
    def _login_still_valid(session: Session, access: SiteAccess) -> bool:
        """The session's login checked against `access` (once per version of the files)."""
        checked = session.attributes.get(_LOGIN_CHECK)
        if checked is not None and checked[0] is access:
            return bool(checked[1])
        valid = access.authenticate(session.username, session.password)
        session.attributes[_LOGIN_CHECK] = (access, valid)
        return valid
