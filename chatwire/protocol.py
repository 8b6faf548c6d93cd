"""Payload models of the wire protocol: socket events and REST bodies, validated with pydantic v2.

Strings are bounded so that no single field can be abused; unknown fields are ignored (old and new clients
interoperate), except where a field would change behaviour.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from chatwire.util import nested_deeper_than, text_problem

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=64)]  # the width of every user id column
Name = Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=8192)]
Content = Annotated[str, StringConstraints(max_length=1_000_000)]
ReactionName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


# Deepest nesting of lists/objects accepted in any payload: far above real chats and notes, far below what
# the JSON encoders (orjson stops at 255) and Python's recursion limit can take.
MAX_NESTING = 128

# Validation context of a payload whose nesting and text were already checked whole (`socket_handler` does so for
# every socket event): the per-field checks below would repeat that work on each field of each nested model.
PAYLOAD_CHECKED: dict[str, bool] = {"payload_checked": True}


def _plain_text(text: str) -> bool:
    return text.isascii() and "\x00" not in text


def _flat_and_plain(value: dict[Any, Any]) -> bool:
    """A dict of ASCII keys without NUL to numbers, bools, None or such strings (a notice's `{"round": 1}`):
    one level deep and nothing unstorable in it, told without a pass over a copy of it."""
    for key, item in value.items():
        if type(key) is not str or not _plain_text(key):
            return False
        kind = type(item)
        if kind is str:
            if not _plain_text(item):
                return False
        elif not (kind is int or kind is bool or kind is float or item is None):
            return False
    return True


def _all_models(values: list[Any]) -> bool:
    kinds = set(map(type, values))
    return all(issubclass(kind, BaseModel) for kind in kinds)


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", str_max_length=1_000_000)

    @field_validator("*", mode="after")
    @classmethod
    def _edge_rules(cls, value: Any, info: ValidationInfo) -> Any:
        """The edge rules of every field: lists and objects nest at most MAX_NESTING deep, and every string at any
        depth is encodable UTF-8 and free of NUL (PostgreSQL text cannot hold it), so both databases and every
        encoder agree; anything else is `invalid_payload`. One validator for both, and the values that cannot
        break them (an ASCII string without NUL, a number, a bool, None) return first: it runs for each field
        of each item of a batch."""
        kind = type(value)
        if kind is str:
            if value.isascii() and "\x00" not in value:
                return value
        elif kind is int or kind is bool or kind is float or value is None:
            return value
        elif kind is dict and _flat_and_plain(value):
            return value
        elif kind is list and value and isinstance(value[0], BaseModel) and _all_models(value):
            return value  # a list of models (a batch's items): each was held to these rules field by field
        if info.context is PAYLOAD_CHECKED:
            return value
        if isinstance(value, dict | list) and nested_deeper_than(value, MAX_NESTING):
            raise ValueError(f"nested more than {MAX_NESTING} levels deep")
        problem = text_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


# socket events


class AuthBlock(Model):
    token: Token


class UserJoin(Model):
    auth: AuthBlock
    since: Annotated[str, StringConstraints(max_length=128)] | int | None = None


class JoinChannels(Model):
    auth: AuthBlock | None = None


class JoinNote(Model):
    note_id: Id
    auth: AuthBlock | None = None


class Usage(Model):
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    action: Annotated[str, StringConstraints(max_length=64)] | None = None
    chat_id: Annotated[str, StringConstraints(max_length=128)] | None = None


class TypingData(Model):
    typing: StrictBool  # "yes" or 1 is refused, not coerced


class ChannelEventData(Model):
    type: Literal["typing", "last_read_at"]
    data: dict[str, Any] | None = None


class ChannelEvent(Model):
    channel_id: Id
    message_id: Id | None = None
    data: ChannelEventData


class ChatEventData(Model):
    """`last_read_at`, or Open WebUI's chat room events: `join`, `leave`, `typing` (`data: {typing: bool}`)."""

    type: Literal["last_read_at", "join", "leave", "typing"]
    data: dict[str, Any] | None = None


class ChatEvent(Model):
    chat_id: Id
    data: ChatEventData


def _yjs_bytes(value: Any) -> bytes:
    """Yjs bytes arrive as a JSON array of integers 0-255 (the original client) or as a binary attachment."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, list):
        if not all(type(item) is int for item in value):
            raise ValueError("must be an array of integers 0-255")
        try:
            return bytes(value)
        except ValueError:
            raise ValueError("must be an array of integers 0-255") from None
    raise ValueError("must be an array of integers 0-255 or binary")


YjsBytes = Annotated[bytes, BeforeValidator(_yjs_bytes)]
DocumentId = Annotated[str, StringConstraints(min_length=1, max_length=160)]


class YDocRef(Model):
    document_id: DocumentId


class YDocJoin(YDocRef):
    # user_id and user_name are ignored: the server uses the authenticated user's.
    user_color: Annotated[str, StringConstraints(max_length=64)] | None = None


class YDocData(Model):
    content: Any = None


class YDocUpdate(YDocRef):
    update: YjsBytes | None = None
    data: YDocData | None = None


class YAwarenessUpdate(YDocRef):
    update: YjsBytes


# REST bodies


class SignupForm(Model):
    name: Name
    email: EmailStr
    password: Password


class SigninForm(Model):
    email: EmailStr
    password: Password


class AddUserForm(SignupForm):
    role: Literal["admin", "user", "pending"] = "user"


def _empty_as_none(value: Any) -> Any:
    return None if value == "" else value


def _image_url(value: str | None) -> str | None:
    """An avatar a browser may load: a same-origin path, http(s), or an inline raster image; nothing scriptable."""
    if value is None or value == "":
        return value
    if value.startswith("/") and not value.startswith("//"):
        return value
    if value.lower().startswith(("http://", "https://")):
        return value
    if re.match(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]*\Z", value):
        return value
    raise ValueError("profile_image_url must be a path, an http(s) URL or a data:image/ URL")


class UserUpdateForm(Model):
    """An admin's edit of a user (Open WebUI's `POST /api/v1/users/{id}/update`): only the fields given change."""

    role: Literal["admin", "user", "pending"] | None = None
    name: Name | None = None
    email: Annotated[EmailStr | None, BeforeValidator(_empty_as_none)] = None
    profile_image_url: Annotated[
        Annotated[str, StringConstraints(max_length=1024)] | None, AfterValidator(_image_url)
    ] = None
    # Open WebUI's form sends "" when the password is left alone.
    password: Annotated[Password | None, BeforeValidator(_empty_as_none)] = None


def _none_as(default: Any) -> BeforeValidator:
    return BeforeValidator(lambda value: default() if value is None else value)


class ChannelForm(Model):
    """Open WebUI's create form sends `type: ""` for a standard channel, `is_private`/`user_ids` as null, and no
    name for a dm (named after its members)."""

    name: Annotated[str, StringConstraints(max_length=255, strip_whitespace=True)] = ""
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    type: Annotated[Literal["group", "dm"] | None, BeforeValidator(_empty_as_none)] = None
    is_private: Annotated[bool, _none_as(bool)] = False
    user_ids: Annotated[list[UserId], _none_as(list)] = Field(default_factory=list, max_length=10_000)
    data: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _named_unless_dm(self) -> ChannelForm:
        if not self.name and self.type != "dm":
            raise ValueError("name: a channel needs a name (only a dm may have none)")
        return self


class UserIdsForm(Model):
    user_ids: list[UserId] = Field(min_length=1, max_length=10_000)


class MessageForm(Model):
    content: Content
    parent_id: Id | None = None
    temp_id: Annotated[str, StringConstraints(max_length=128)] | None = None
    data: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None


class PinForm(Model):
    is_pinned: StrictBool


class MessageUpdateForm(Model):
    content: Content
    data: dict[str, Any] | None = None


class ReactionForm(Model):
    name: ReactionName


class NewChatForm(Model):
    chat: dict[str, Any]


class AccessGroup(Model):
    user_ids: list[UserId] = Field(default_factory=list, max_length=10_000)
    group_ids: list[Id] = Field(default_factory=list, max_length=10_000)


class AccessControl(Model):
    read: AccessGroup = Field(default_factory=AccessGroup)
    write: AccessGroup = Field(default_factory=AccessGroup)


class AccessGrant(Model):
    """One grant of Open WebUI 0.12's `access_grants` (a user or group and a permission)."""

    principal_type: Annotated[str, StringConstraints(max_length=32)]
    principal_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    permission: Annotated[str, StringConstraints(max_length=32)]


class NoteForm(Model):
    title: Annotated[str, StringConstraints(max_length=1024)]
    data: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    access_control: AccessControl | None = None
    access_grants: list[AccessGrant] | None = Field(default=None, max_length=10_000)


class NoteUpdateForm(Model):
    title: Annotated[str, StringConstraints(max_length=1024)] | None = None
    data: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None


class NoteAccessForm(Model):
    """chatwire's `access_control`, or Open WebUI 0.12's `access_grants` (which wins when both are sent)."""

    access_control: AccessControl | None = None
    access_grants: list[AccessGrant] | None = Field(default=None, max_length=10_000)


# server API (API keys; see chatwire/api/server_api.py)


class PublishForm(Model):
    room: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    event: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    data: Any = None


class PublishBatchForm(Model):
    events: Annotated[list[PublishForm], Field(min_length=1, max_length=1000)]


class ServerUserForm(Model):
    name: Name | None = None
    email: EmailStr | None = None


class ServerChannelForm(Model):
    name: Name
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    type: Literal["group"] | None = None
    is_private: bool = False
    user_ids: list[Id] = Field(default_factory=list, max_length=10_000)


class ChatEventForm(Model):
    """One chat event for a message (server-to-server emit): `{type, data}`."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    data: Any = None


class CompletionForm(Model):
    """A generation request in chatwire's shape (`messages`, `chat_id`, `id`) or Open WebUI's frontend shape
    (`user_message`, `parent_id`, `chat_id`, `id` or `message_ids`); unknown fields are ignored."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    messages: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)
    chat_id: Id | None = None
    id: Id | None = None
    session_id: Id | None = None
    stream: bool = True
    user_message: dict[str, Any] | None = None
    parent_id: Id | None = None
    message_ids: list[dict[str, Any]] | None = Field(None, max_length=16)

    @property
    def new_chat(self) -> bool:
        """Open WebUI's signal for "create the chat": `parent_id: null` sent, and no chat id."""
        return "parent_id" in self.model_fields_set and self.parent_id is None and not self.chat_id

    @property
    def answer_id(self) -> str | None:
        """The id of the answer to write: `id`, else the first of `message_ids` (one model per request here)."""
        if self.id:
            return self.id
        for entry in self.message_ids or []:
            mid = entry.get("message_id") if isinstance(entry, dict) else None
            if isinstance(mid, str) and 0 < len(mid) <= 128:
                return mid
        return None


# webhooks (chatwire/api/webhooks.py and the server API)

WebhookEvent = Annotated[str, StringConstraints(min_length=1, max_length=64)]
WebhookUrl = Annotated[str, StringConstraints(min_length=1, max_length=2048, strip_whitespace=True)]


class WebhookEndpointForm(Model):
    url: WebhookUrl
    events: list[WebhookEvent] = Field(min_length=1, max_length=32)
    description: Annotated[str, StringConstraints(max_length=255)] = ""


class WebhookEndpointUpdateForm(Model):
    url: WebhookUrl | None = None
    events: list[WebhookEvent] | None = Field(None, min_length=1, max_length=32)
    description: Annotated[str, StringConstraints(max_length=255)] | None = None
    active: StrictBool | None = None
    rotate_secret: StrictBool = False


class ChannelWebhookForm(Model):
    """Open WebUI's `ChannelWebhookForm`: the name messages are posted under, an optional image."""

    name: Name
    profile_image_url: Annotated[str, StringConstraints(max_length=100_000)] | None = None


class WebhookMessageForm(Model):
    content: Annotated[str, StringConstraints(min_length=1, max_length=1_000_000)]
