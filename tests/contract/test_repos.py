"""Repository contract: every repository behaves the same on SQLite and on a real PostgreSQL database."""

from __future__ import annotations

import asyncio

import pytest

from chatwire.db.engine import Database
from chatwire.db.models import Chat, ChatMessage, User
from chatwire.db.repos.api_keys import ApiKeyRepo
from chatwire.db.repos.channels import ChannelRepo
from chatwire.db.repos.chats import ChatRepo, chat_to_json
from chatwire.db.repos.notes import NoteRepo
from chatwire.db.repos.users import NewUser, UserRepo
from chatwire.errors import ChatwireError, ErrorCode, not_found
from chatwire.util import now_s


async def make_users(db: Database, *names: str) -> list[User]:
    repo = UserRepo(db)
    return [
        await repo.create(name=n, email=f"{n.lower()}@example.com", password_hash="h", role="user")
        for n in names
    ]


# users


async def test_first_user_is_admin_then_default_role(db: Database) -> None:
    repo = UserRepo(db)
    first = await repo.create(
        name="Ada", email="Ada@Example.com", password_hash="h", role="user", first_is_admin=True
    )
    second = await repo.create(
        name="Bob", email="bob@example.com", password_hash="h", role="user", first_is_admin=True
    )
    assert first.role == "admin" and second.role == "user"
    assert first.email == "ada@example.com"
    assert (await repo.get_by_email("ADA@example.com")).id == first.id  # type: ignore[union-attr]
    assert await repo.count() == 2
    assert {u.id for u in await repo.list()} == {first.id, second.id}
    assert len(await repo.list(skip=1)) == 1
    assert set(await repo.list_ids()) == {first.id, second.id}
    assert {u.id for u in await repo.get_many([second.id, "nobody"])} == {second.id}
    assert await repo.get_many([]) == []


async def test_concurrent_first_signups_make_exactly_one_admin(db: Database) -> None:
    repo = UserRepo(db)
    users = await asyncio.gather(
        *(
            repo.create(
                name=f"u{i}", email=f"u{i}@example.com", password_hash="h", role="user", first_is_admin=True
            )
            for i in range(8)
        )
    )
    assert sorted(u.role for u in users) == ["admin"] + ["user"] * 7


async def test_provision_many_creates_returns_existing_and_gives_taken_emails_the_fallback(
    db: Database,
) -> None:
    repo = UserRepo(db)
    (ada,) = await make_users(db, "Ada")

    def new(uid: str, email: str | None) -> NewUser:
        return NewUser(
            user_id=uid, name=uid, email=email, fallback_email=f"{uid}@fallback.invalid", role="user"
        )

    first = await repo.provision_many(
        [
            new("x1", "ADA@example.com"),
            new("x2", "X2@example.com"),
            new("x3", "x2@example.com"),
            new("x4", None),
        ]
    )
    assert {uid: created for uid, (_user, created) in first.items()} == {
        "x1": True,
        "x2": True,
        "x3": True,
        "x4": True,
    }
    emails = {uid: user.email for uid, (user, _created) in first.items()}
    assert emails == {
        "x1": "x1@fallback.invalid",  # Ada has it
        "x2": "x2@example.com",
        "x3": "x3@fallback.invalid",  # x2 took it earlier in the same batch
        "x4": "x4@fallback.invalid",
    }
    again = await repo.provision_many([new("x2", "other@example.com"), new("x5", "x5@example.com")])
    assert again["x2"][1] is False and again["x2"][0].email == "x2@example.com"
    assert again["x5"][1] is True
    stored = {u.id: u for u in await repo.get_many(["x1", "x2", "x3", "x4", "x5"])}
    assert sorted(stored) == ["x1", "x2", "x3", "x4", "x5"]
    assert stored["x3"].password_hash is None and stored["x3"].role == "user"
    assert (await repo.get(ada.id)).email == "ada@example.com"  # type: ignore[union-attr]
    assert await repo.provision_many([]) == {}


async def test_concurrent_provision_batches_create_each_user_once(db: Database) -> None:
    """Two batches sharing users race (on PostgreSQL, as two processes would): each user is created by exactly
    one of them, and the other gets the row."""
    repo = UserRepo(db)

    def batch(*uids: str) -> list[NewUser]:
        return [NewUser(uid, uid, f"{uid}@example.com", f"{uid}@fallback.invalid", "user") for uid in uids]

    results = await asyncio.gather(
        *(repo.provision_many(batch(f"r{i}", f"r{i + 1}", "shared")) for i in range(4))
    )
    created: dict[str, int] = {}
    for result in results:
        for uid, (user, was_created) in result.items():
            assert user.id == uid
            created[uid] = created.get(uid, 0) + int(was_created)
    assert created == {"shared": 1, **{f"r{i}": 1 for i in range(5)}}
    assert await repo.count() == 6


async def test_email_is_unique(db: Database) -> None:
    repo = UserRepo(db)
    await repo.create(name="Ada", email="ada@example.com", password_hash="h", role="user")
    with pytest.raises(ChatwireError) as info:
        await repo.create(name="Ada2", email="ADA@example.com", password_hash="h", role="user")
    assert info.value.code == ErrorCode.CONFLICT
    assert await repo.count() == 1


async def test_touch_sets_last_active(db: Database) -> None:
    (ada,) = await make_users(db, "Ada")
    repo = UserRepo(db)
    await repo.touch(ada.id, 12345)
    assert (await repo.get(ada.id)).last_active_at == 12345  # type: ignore[union-attr]


async def test_search_by_name_and_optionally_email(db: Database) -> None:
    await make_users(db, "Ada Lovelace", "Bob", "adam", "Eve_1")
    repo = UserRepo(db)
    found, total = await repo.search("AD", skip=0, limit=10, by_email=False)
    assert [u.name for u in found] == ["Ada Lovelace", "adam"] and total == 2
    page, total = await repo.search("", skip=1, limit=2, by_email=False)
    assert [u.name for u in page] == ["adam", "Bob"] and total == 4
    # "_" is a literal, not a LIKE wildcard; email matches only when asked for
    assert [u.name for u in (await repo.search("e_", skip=0, limit=10, by_email=False))[0]] == ["Eve_1"]
    assert (await repo.search("example.com", skip=0, limit=10, by_email=False))[1] == 0
    assert (await repo.search("bob@", skip=0, limit=10, by_email=True))[1] == 1


async def test_revoke_and_is_revoked(db: Database) -> None:
    (ada,) = await make_users(db, "Ada")
    repo = UserRepo(db)
    assert not await repo.is_revoked("jti-1")
    await repo.revoke("jti-1", ada.id, now_s() + 3600)
    await repo.revoke("jti-1", ada.id, now_s() + 3600)  # idempotent
    assert await repo.is_revoked("jti-1")
    assert not await repo.is_revoked("jti-2")
    # an already expired revocation is swept on the next revoke
    await repo.revoke("jti-old", ada.id, now_s() - 10)
    await repo.revoke("jti-3", ada.id, now_s() + 3600)
    assert not await repo.is_revoked("jti-old")
    assert await repo.is_revoked("jti-1") and await repo.is_revoked("jti-3")


async def test_revoked_tokens_lists_the_unexpired_ones(db: Database) -> None:
    (ada,) = await make_users(db, "Ada")
    repo = UserRepo(db)
    soon = now_s() + 3600
    await repo.revoke("jti-past", ada.id, now_s() - 10)
    await repo.revoke("jti-a", ada.id, soon)  # sweeps jti-past
    await repo.revoke("jti-b", ada.id, soon + 1)
    assert sorted(await repo.revoked_tokens()) == [("jti-a", soon), ("jti-b", soon + 1)]


async def test_api_key_by_hash_sees_the_row_and_its_revocation_at_once(db: Database) -> None:
    """The look-up of every server API call (SQLite reads it on a lane of its own): the stored row, None for an
    unknown hash, and a revocation committed elsewhere visible on the very next call."""
    repo = ApiKeyRepo(db)
    await repo.create(
        key_id="k1", name="backend", key_hash="h" * 64, prefix="cwk_abcdefgh", scopes=["publish"]
    )
    row = await repo.by_hash("h" * 64)
    assert row is not None
    assert (row.id, row.name, row.prefix, row.scopes, row.revoked_at) == (
        "k1",
        "backend",
        "cwk_abcdefgh",
        ["publish"],
        None,
    )
    assert row.created_at > 0
    assert await repo.by_hash("x" * 64) is None
    assert await ApiKeyRepo(db).revoke("k1")
    revoked = await repo.by_hash("h" * 64)
    assert revoked is not None and revoked.revoked_at is not None


async def test_user_changes_call_the_changed_hooks(db: Database) -> None:
    (ada,) = await make_users(db, "Ada")
    repo = UserRepo(db)
    seen: list[str] = []
    repo.changed_hooks.append(seen.append)
    await repo.update_profile(ada.id, role="pending")
    assert seen == [ada.id]


# channels


async def new_channel(repo: ChannelRepo, owner: User, members: list[User], **kw: object) -> str:
    channel = await repo.create(
        user_id=owner.id,
        name=str(kw.get("name", "team")),
        description=None,
        type=kw.get("type", "group"),  # type: ignore[arg-type]
        is_private=bool(kw.get("is_private", True)),
        member_ids=[owner.id, *(m.id for m in members), owner.id],
    )
    return channel.id


async def test_channel_create_members_and_listing(db: Database) -> None:
    ada, bob, eve = await make_users(db, "Ada", "Bob", "Eve")
    repo = ChannelRepo(db)
    cid = await new_channel(repo, ada, [bob])
    public = await new_channel(repo, ada, [bob, eve], type=None, is_private=False, name="general")
    await new_channel(repo, ada, [], type=None, is_private=True, name="secret")

    assert sorted(await repo.member_ids(cid)) == sorted([ada.id, bob.id])
    assert [c.id for c in await repo.list_for_user(bob.id)] == [cid, public]
    assert [c.id for c in await repo.list_for_user(eve.id)] == [public]
    assert [c.id for c in await repo.list_public()] == [public]
    assert set(await repo.channel_ids_for_user(eve.id)) == {public}
    assert len(await repo.channel_ids_for_user(ada.id)) == 3
    assert await repo.membership(cid, eve.id) is None
    assert (await repo.get(cid)).name == "team"  # type: ignore[union-attr]

    assert await repo.add_members(cid, [eve.id, bob.id, eve.id]) == [eve.id]
    assert await repo.add_members(cid, [eve.id]) == []
    assert sorted(await repo.member_ids(cid)) == sorted([ada.id, bob.id, eve.id])
    assert await repo.remove_members(cid, [bob.id, "nobody"]) == [bob.id]
    assert await repo.remove_members(cid, [bob.id]) == []
    assert sorted(await repo.member_ids(cid)) == sorted([ada.id, eve.id])
    assert cid not in [c.id for c in await repo.list_for_user(bob.id)]


async def test_read_markers_and_unread_counts(db: Database) -> None:
    ada, bob = await make_users(db, "Ada", "Bob")
    repo = ChannelRepo(db)
    cid = await new_channel(repo, ada, [bob])
    other = await new_channel(repo, ada, [bob], name="other")
    first = await repo.post_message(
        channel_id=cid, user_id=ada.id, content="1", parent_id=None, data=None, meta=None
    )
    await repo.post_message(channel_id=cid, user_id=ada.id, content="2", parent_id=None, data=None, meta=None)
    await repo.post_message(
        channel_id=cid, user_id=ada.id, content="r", parent_id=first.id, data=None, meta=None
    )
    await repo.post_message(
        channel_id=cid, user_id=bob.id, content="own", parent_id=None, data=None, meta=None
    )
    await repo.post_message(
        channel_id=other, user_id=ada.id, content="x", parent_id=None, data=None, meta=None
    )
    # replies and one's own messages do not count
    assert await repo.unread_counts(bob.id) == {cid: 2, other: 1}
    assert await repo.unread_counts(ada.id) == {cid: 1}

    assert await repo.set_last_read(cid, bob.id, first.created_at)
    assert (await repo.membership(cid, bob.id)).last_read_at == first.created_at  # type: ignore[union-attr]
    assert await repo.unread_counts(bob.id) == {cid: 1, other: 1}
    latest = max(m.created_at for m in await repo.list_messages(cid, 0, 10))
    assert await repo.set_last_read(cid, bob.id, latest)
    assert await repo.unread_counts(bob.id) == {other: 1}
    assert not await repo.set_last_read(cid, "nobody", latest)


async def test_messages_threads_update_and_delete(db: Database) -> None:
    ada, bob = await make_users(db, "Ada", "Bob")
    repo = ChannelRepo(db)
    cid = await new_channel(repo, ada, [bob])
    top = await repo.post_message(
        channel_id=cid, user_id=ada.id, content="top", parent_id=None, data={"k": 1}, meta=None
    )
    second = await repo.post_message(
        channel_id=cid, user_id=bob.id, content="second", parent_id=None, data=None, meta=None
    )
    r1 = await repo.post_message(
        channel_id=cid, user_id=bob.id, content="r1", parent_id=top.id, data=None, meta=None
    )
    r2 = await repo.post_message(
        channel_id=cid, user_id=ada.id, content="r2", parent_id=top.id, data=None, meta=None
    )
    assert (await repo.get_message(top.id)).reply_count == 2  # type: ignore[union-attr]
    assert [m.id for m in await repo.list_messages(cid, 0, 10)] == [second.id, top.id]
    assert [m.id for m in await repo.list_messages(cid, 1, 10)] == [top.id]
    assert [m.id for m in await repo.list_messages(cid, 0, 1)] == [second.id]
    assert [m.id for m in await repo.list_thread(top.id, 0, 10)] == [r2.id, r1.id]

    await repo.update_message(top.id, "edited", None)
    edited = await repo.get_message(top.id)
    assert edited is not None and edited.content == "edited" and edited.data == {"k": 1}
    assert edited.updated_at >= top.updated_at
    await repo.update_message(top.id, "edited again", {"k": 2})
    assert (await repo.get_message(top.id)).data == {"k": 2}  # type: ignore[union-attr]

    # deleting a reply decrements its parent's count
    await repo.add_reaction(r1.id, ada.id, "+1")
    await repo.delete_message(r1)
    assert await repo.get_message(r1.id) is None
    assert (await repo.get_message(top.id)).reply_count == 1  # type: ignore[union-attr]
    assert await repo.reactions_for([r1.id]) == {}

    # deleting a parent takes its replies and their reactions with it
    await repo.add_reaction(r2.id, bob.id, "eyes")
    await repo.add_reaction(top.id, bob.id, "eyes")
    top_now = await repo.get_message(top.id)
    assert top_now is not None
    await repo.delete_message(top_now)
    assert await repo.get_message(top.id) is None and await repo.get_message(r2.id) is None
    assert await repo.reactions_for([top.id, r2.id]) == {}
    assert [m.id for m in await repo.list_messages(cid, 0, 10)] == [second.id]


async def test_reactions_idempotent_and_grouped(db: Database) -> None:
    ada, bob = await make_users(db, "Ada", "Bob")
    repo = ChannelRepo(db)
    cid = await new_channel(repo, ada, [bob])
    m = await repo.post_message(
        channel_id=cid, user_id=ada.id, content="m", parent_id=None, data=None, meta=None
    )
    n = await repo.post_message(
        channel_id=cid, user_id=ada.id, content="n", parent_id=None, data=None, meta=None
    )
    assert await repo.add_reaction(m.id, ada.id, "+1")
    assert not await repo.add_reaction(m.id, ada.id, "+1")
    assert await repo.add_reaction(m.id, bob.id, "+1")
    assert await repo.add_reaction(m.id, bob.id, "heart")
    assert await repo.add_reaction(n.id, bob.id, "heart")
    grouped = await repo.reactions_for([m.id, n.id])
    assert grouped[m.id] == [
        {"name": "+1", "user_ids": [ada.id, bob.id], "count": 2},
        {"name": "heart", "user_ids": [bob.id], "count": 1},
    ]
    assert grouped[n.id] == [{"name": "heart", "user_ids": [bob.id], "count": 1}]
    assert await repo.remove_reaction(m.id, ada.id, "+1")
    assert not await repo.remove_reaction(m.id, ada.id, "+1")
    assert (await repo.reactions_for([m.id]))[m.id][0] == {"name": "+1", "user_ids": [bob.id], "count": 1}
    assert await repo.reactions_for([]) == {}


async def test_channel_delete_removes_everything(db: Database) -> None:
    ada, bob = await make_users(db, "Ada", "Bob")
    repo = ChannelRepo(db)
    cid = await new_channel(repo, ada, [bob])
    m = await repo.post_message(
        channel_id=cid, user_id=ada.id, content="m", parent_id=None, data=None, meta=None
    )
    await repo.add_reaction(m.id, bob.id, "+1")
    await repo.delete(cid)
    assert await repo.get(cid) is None
    assert await repo.member_ids(cid) == []
    assert await repo.get_message(m.id) is None
    assert await repo.list_for_user(bob.id) == []


# chats

OPEN_WEBUI_CHAT = {
    "title": "Hello",
    "models": ["demo"],
    "history": {
        "currentId": "a1",
        "messages": {
            "u1": {
                "id": "u1",
                "parentId": None,
                "childrenIds": ["a1"],
                "role": "user",
                "content": "hi",
                "timestamp": 1700000000,
                "models": ["demo"],
            },
            "a1": {
                "id": "a1",
                "parentId": "u1",
                "childrenIds": [],
                "role": "assistant",
                "content": "hello",
                "model": "demo",
                "done": True,
                "statusHistory": [{"done": True, "description": "searched"}],
                "sources": [{"source": {"name": "x"}}],
                "files": [{"type": "image", "url": "u"}],
                "embeds": ["<b>e</b>"],
                "followUps": ["why?"],
                "usage": {"total_tokens": 3},
                "custom": {"kept": True},
            },
        },
    },
}


async def test_chat_create_and_round_trip(db: Database) -> None:
    (ada,) = await make_users(db, "Ada")
    repo = ChatRepo(db)
    record = await repo.create(ada.id, OPEN_WEBUI_CHAT)
    loaded = await repo.get_with_messages(record.chat.id)
    assert loaded is not None
    assert [m.id for m in loaded.messages] == ["u1", "a1"]
    body = chat_to_json(loaded)
    assert body["title"] == "Hello" and body["user_id"] == ada.id
    chat = body["chat"]
    assert chat["models"] == ["demo"]
    assert chat["history"]["currentId"] == "a1"
    a1 = chat["history"]["messages"]["a1"]
    for key, value in OPEN_WEBUI_CHAT["history"]["messages"]["a1"].items():  # type: ignore[index]
        assert a1[key] == value, key
    u1 = chat["history"]["messages"]["u1"]
    for key, value in OPEN_WEBUI_CHAT["history"]["messages"]["u1"].items():  # type: ignore[index]
        assert u1[key] == value, key
    assert [m["id"] for m in chat["messages"]] == ["u1", "a1"]
    # creating again from the JSON we returned yields the same messages
    again = chat_to_json(await repo.create(ada.id, chat))
    assert again["chat"]["history"]["messages"] == chat["history"]["messages"]
    assert await repo.get_with_messages("nope") is None


async def test_chat_add_message_list_and_read_marker(db: Database) -> None:
    ada, bob = await make_users(db, "Ada", "Bob")
    repo = ChatRepo(db)
    first = await repo.create(ada.id, {"title": "one"})
    second = await repo.create(ada.id, OPEN_WEBUI_CHAT)
    await repo.create(bob.id, {"title": "bob's"})
    assert {c.id for c in await repo.list_for_user(ada.id)} == {first.chat.id, second.chat.id}
    assert len(await repo.list_for_user(ada.id, 0, 1)) == 1

    msg = await repo.add_message(
        second.chat.id, {"id": "a2", "parentId": "u1", "role": "assistant", "content": "", "done": False}
    )
    assert msg.position == 2
    loaded = await repo.get_with_messages(second.chat.id)
    assert loaded is not None and loaded.chat.current_id == "a2"
    body = chat_to_json(loaded)
    assert body["chat"]["history"]["messages"]["a2"]["done"] is False
    assert sorted(body["chat"]["history"]["messages"]["u1"]["childrenIds"]) == ["a1", "a2"]
    assert [m["id"] for m in body["chat"]["messages"]] == ["u1", "a2"]
    got = await repo.get_message(second.chat.id, "a2")
    assert got is not None and got.role == "assistant"

    await repo.set_last_read(first.chat.id, 4242)
    assert (await repo.get(first.chat.id)).last_read_at == 4242  # type: ignore[union-attr]
    await repo.update_chat(first.chat.id, title="renamed")
    assert (await repo.get(first.chat.id)).title == "renamed"  # type: ignore[union-attr]

    await repo.delete(second.chat.id)
    assert await repo.get_with_messages(second.chat.id) is None
    assert await repo.get_message(second.chat.id, "a2") is None


# notes


async def test_notes_grants_update_and_delete(db: Database) -> None:
    ada, bob, eve = await make_users(db, "Ada", "Bob", "Eve")
    repo = NoteRepo(db)
    shared = await repo.create(
        user_id=ada.id,
        title="shared",
        data={"content": {"md": "x"}},
        meta=None,
        access_control={"read": {"user_ids": [bob.id]}, "write": {"user_ids": [eve.id]}},
    )
    private = await repo.create(user_id=ada.id, title="private", data=None, meta=None, access_control=None)
    bobs = await repo.create(user_id=bob.id, title="bob's", data=None, meta=None, access_control={})

    assert {n.id for n in await repo.list_for_user(ada.id)} == {shared.id, private.id}
    assert {n.id for n in await repo.list_for_user(bob.id)} == {shared.id, bobs.id}
    assert {n.id for n in await repo.list_for_user(eve.id)} == {shared.id}
    assert len(await repo.list_for_user(eve.id, all_notes=True)) == 3

    updated = await repo.update(shared.id, title="renamed", data={"content": {"md": "y"}})
    assert updated is not None and updated.title == "renamed" and updated.data == {"content": {"md": "y"}}
    assert updated.access_control == shared.access_control

    moved = await repo.update(shared.id, access_control={"read": {"user_ids": [eve.id]}})
    assert moved is not None and moved.access_control == {"read": {"user_ids": [eve.id]}}
    assert {n.id for n in await repo.list_for_user(bob.id)} == {bobs.id}
    assert {n.id for n in await repo.list_for_user(eve.id)} == {shared.id}
    await repo.update(shared.id, access_control=None)
    assert await repo.list_for_user(eve.id) == []
    assert await repo.update("nope", title="x") is None

    await repo.delete(shared.id)
    assert await repo.get(shared.id) is None
    assert {n.id for n in await repo.list_for_user(ada.id)} == {private.id}


async def test_chat_turns_merge_and_interrupted(db: Database) -> None:
    """The conversation writes: a turn (question + empty answer), the merge of a client's chat, the sweep that
    ends unfinished answers as interrupted, and the tags of a user's chats."""
    from chatwire.errors import ChatwireError

    (ada,) = await make_users(db, "Ada")
    repo = ChatRepo(db)
    chat_id = (await repo.create(ada.id, {"title": "t"})).chat.id
    path = await repo.add_turn(
        chat_id, user_message={"id": "u1", "content": "hi"}, parent_id=None, assistant_id="a1", model="m"
    )
    assert [(m.id, m.role, m.content) for m in path] == [("u1", "user", "hi")]
    # Regenerate: the stored question again; edit: a sibling question under the same parent.
    await repo.add_turn(chat_id, user_message={"id": "u1"}, parent_id=None, assistant_id="a1b", model="m")
    path = await repo.add_turn(
        chat_id,
        user_message={"id": "u2", "content": "more", "parentId": "a1"},
        parent_id=None,
        assistant_id="a2",
        model="m",
    )
    assert [m.id for m in path] == ["u1", "a1", "u2"]
    for bad in (
        {"user_message": {"id": "u3", "content": "x", "parentId": "nope"}, "assistant_id": "a3"},
        {"user_message": {"id": "a1"}, "assistant_id": "a4"},
        {"user_message": {"id": "u4", "content": "x"}, "assistant_id": "u1"},
    ):
        with pytest.raises(ChatwireError):
            await repo.add_turn(chat_id, parent_id=None, model="m", **bad)  # type: ignore[arg-type]
    body = chat_to_json(await repo.get_with_messages(chat_id))  # type: ignore[arg-type]
    history = body["chat"]["history"]
    assert set(history["messages"]) == {"u1", "a1", "a1b", "u2", "a2"}  # the refusals stored nothing
    assert history["currentId"] == "a2" and history["messages"]["u1"]["childrenIds"] == ["a1", "a1b"]
    assert history["messages"]["a2"]["model"] == "m" and history["messages"]["a2"]["done"] is False

    # A stale client's copy: its empty unfinished a2 loses to the stored row, its title and u2 edit win.
    await db_write_content(db, chat_id, "a2", "streamed")
    merged = await repo.update(
        chat_id,
        {
            "title": "T2",
            "folder": "x",
            "history": {
                "currentId": "a1b",
                "messages": {
                    "a2": {"id": "a2", "role": "assistant", "content": "", "done": False},
                    "u2": {"id": "u2", "role": "user", "content": "more!", "parentId": "a1"},
                },
            },
        },
    )
    assert merged is not None
    body = chat_to_json(merged)
    assert body["title"] == "T2" and body["chat"]["folder"] == "x"
    assert body["chat"]["history"]["messages"]["a2"]["content"] == "streamed"
    assert body["chat"]["history"]["messages"]["u2"]["content"] == "more!"
    assert [m["id"] for m in body["chat"]["messages"]] == ["u1", "a1b"]
    assert await repo.update("nope", {"title": "x"}) is None

    assert await repo.mark_interrupted(older_than=0) == 0  # everything is newer than that
    assert await repo.mark_interrupted(chat_id="other") == 0
    assert await repo.mark_interrupted() == 3  # a1, a1b, a2: none finished
    a2 = await repo.get_message(chat_id, "a2")
    assert a2 is not None and a2.done and a2.outcome == "interrupted" and a2.content == "streamed"

    from chatwire.db.repos.chats import MessageStore

    await MessageStore(db).update_chat(chat_id, {"tags": ["work", "tea", "work"]})
    assert await repo.tags_of_user(ada.id) == ["work", "tea"]


async def db_write_content(db: Database, chat_id: str, message_id: str, content: str) -> None:
    from chatwire.db.repos.chats import MessageStore

    assert await MessageStore(db).write_patch(chat_id, message_id, content=content)


async def test_add_turn_decides_the_question_from_the_chat_it_reads(db: Database) -> None:
    """`decide` sees the chat as stored before the turn and picks what is stored; a refusal stores nothing."""
    (ada,) = await make_users(db, "Ada")
    repo = ChatRepo(db)
    chat_id = (await repo.create(ada.id, {"title": "t"})).chat.id
    await repo.add_turn(
        chat_id, user_message={"id": "u1", "content": "hi"}, parent_id=None, assistant_id="a1", model="m"
    )
    seen: list[tuple[str | None, list[str]]] = []

    def follow_up(chat: Chat, found: list[ChatMessage]) -> tuple[dict[str, str] | None, str | None]:
        seen.append((chat.current_id, [m.id for m in found]))
        return {"id": "u2", "content": "more"}, chat.current_id

    path = await repo.add_turn(
        chat_id, user_message=None, parent_id=None, assistant_id="a2", model="m", decide=follow_up
    )
    assert seen == [("a1", ["u1", "a1"])]
    assert [m.id for m in path] == ["u1", "a1", "u2"]

    def refuse(chat: Chat, found: list[ChatMessage]) -> tuple[dict[str, str] | None, str | None]:
        raise not_found("chat")

    with pytest.raises(ChatwireError):
        await repo.add_turn(
            chat_id,
            user_message={"content": "x"},
            parent_id=None,
            assistant_id="a3",
            model="m",
            decide=refuse,
        )
    record = await repo.get_with_messages(chat_id)
    assert record is not None and [m.id for m in record.messages] == ["u1", "a1", "u2", "a2"]
    assert record.chat.current_id == "a2"


async def test_write_patches_apply_in_one_transaction_and_store_what_the_orm_reads(db: Database) -> None:
    """The event writer's patches: appends guarded by the stored length, full content, JSON and scalar columns;
    each reports whether it was written, and the values read back are the ones written (both SQL paths)."""
    from chatwire.db.repos.chats import MessagePatch, MessageStore

    (ada,) = await make_users(db, "Ada")
    repo = ChatRepo(db)
    chat_id = (await repo.create(ada.id, {"title": "t"})).chat.id
    for answer in ("a1", "a2", "a3"):
        await repo.add_turn(
            chat_id, user_message={"content": "q"}, parent_id=None, assistant_id=answer, model="m"
        )
    written = await MessageStore(db).write_patches(
        [
            MessagePatch(chat_id, "a1", suffix="hello", expect_length=0),
            MessagePatch(chat_id, "a1", suffix=" world", expect_length=5),
            MessagePatch(chat_id, "a2", suffix="twice?", expect_length=3),  # the stored length is 0
            MessagePatch(
                chat_id,
                "a3",
                content="all of it",
                values={"statusHistory": [{"description": "é", "done": True}], "done": True, "error": None},
            ),
            MessagePatch(chat_id, "a3", values={"outcome": "done", "usage": {"total_tokens": 3}}),
            MessagePatch(chat_id, "gone", content="x"),
        ]
    )
    assert written == [True, True, False, True, True, False]
    a1, a2, a3 = [await repo.get_message(chat_id, m) for m in ("a1", "a2", "a3")]
    assert a1 is not None and a1.content == "hello world" and not a1.done
    assert a2 is not None and a2.content == ""
    assert a3 is not None and a3.content == "all of it" and a3.done is True
    assert a3.status_history == [{"description": "é", "done": True}]
    assert a3.outcome == "done" and a3.usage == {"total_tokens": 3} and a3.error is None
    assert await MessageStore(db).write_patches([]) == []


async def test_a_turn_and_a_user_read_the_same_whichever_path_stores_them(db: Database) -> None:
    """On SQLite a turn is stored, and a user read, through the direct lane; what they give back and what the
    ORM reads afterwards agree field by field (JSON, booleans, defaults), also for an answer row made earlier
    (by the event writer) that the turn takes over."""
    from chatwire.db.repos.chats import MessageStore, message_to_json

    (ada,) = await make_users(db, "Ada")
    users = UserRepo(db)
    (orm_ada,) = await users.get_many([ada.id])
    read = await users.get(ada.id)
    assert read is not None
    assert {k: getattr(read, k) for k in vars(orm_ada) if not k.startswith("_")} == {
        k: getattr(orm_ada, k) for k in vars(orm_ada) if not k.startswith("_")
    }
    assert await users.get("nobody") is None

    repo = ChatRepo(db)
    chat_id = (await repo.create(ada.id, {"title": "t"})).chat.id
    question = {"id": "u1", "content": "hé", "files": [{"name": "f"}], "custom": {"k": [1, True, None]}}
    path = await repo.add_turn(chat_id, user_message=question, parent_id=None, assistant_id="a1", model="m")
    await MessageStore(db).load_or_create(chat_id, "a2")  # an empty unfinished answer, made by the writer
    primed = []
    repo.answer_hooks.append(primed.append)
    path2 = await repo.add_turn(
        chat_id, user_message={"id": "u2", "content": "q2"}, parent_id="a1", assistant_id="a2", model="m2"
    )
    record = await repo.get_with_messages(chat_id)
    assert record is not None
    stored = {m.id: message_to_json(m) for m in record.messages}
    assert [message_to_json(m) for m in path] == [stored["u1"]]
    assert [message_to_json(m) for m in path2] == [stored["u1"], stored["a1"], stored["u2"]]
    assert stored["u1"]["custom"] == {"k": [1, True, None]} and stored["u1"]["files"] == [{"name": "f"}]
    assert (
        stored["a2"]["parentId"] == "u2" and stored["a2"]["model"] == "m2" and stored["a2"]["done"] is False
    )
    assert [(m.id, m.parent_id, m.model, m.content, m.done) for m in primed] == [
        ("a2", "u2", "m2", "", False)
    ]
    assert record.chat.current_id == "a2"
    with pytest.raises(ChatwireError) as refused:
        await repo.add_turn(
            "no-chat", user_message={"content": "x"}, parent_id=None, assistant_id="a", model="m"
        )
    assert refused.value.code == ErrorCode.NOT_FOUND
