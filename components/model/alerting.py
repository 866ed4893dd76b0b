"""The `alerting` block of the stack config: Alertmanager's receivers and which route goes to whom."""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from components.model.fields import ConfigModel

_RECEIVER_NAME = r"^[a-z][a-z0-9-]{0,40}$"


class EmailReceiver(ConfigModel):
    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    sender: str = Field(alias="from", pattern=r"^[^@\s]+@[^@\s]+$")
    smarthost: str = Field(pattern=r"^[\w.-]+:\d+$")
    auth_username: Optional[str] = None  # its password: alertingSecrets.<receiver name>
    require_tls: bool = True


class WebhookReceiver(ConfigModel):
    """A webhook (a dead man's switch service, a chat bridge); its URL: alertingSecrets.<receiver name>."""

    send_resolved: bool = True


class SlackReceiver(ConfigModel):
    """Slack or a Slack-compatible endpoint (Mattermost, Rocket.Chat); its URL: alertingSecrets.<receiver name>."""

    channel: str = Field(min_length=1)


class Receiver(ConfigModel):
    name: str = Field(pattern=_RECEIVER_NAME)
    email: Optional[EmailReceiver] = None
    webhook: Optional[WebhookReceiver] = None
    slack: Optional[SlackReceiver] = None

    @property
    def needs_secret(self) -> bool:
        return bool(self.webhook or self.slack or (self.email and self.email.auth_username))


class Alerting(ConfigModel):
    """Who hears which alert. Each route names a receiver; unset: that alert reaches nobody."""

    receivers: list[Receiver] = []
    critical: Optional[str] = None  # pages: the head down, and every other critical alert
    warning: Optional[str] = None  # everything else (a windowed tier's only inside its window)
    watchdog: Optional[str] = None  # the dead man's switch: hears the always-firing Watchdog
