"""Your app beside chatwire: its own login mints tokens for chatwire; its backend streams answers to its users."""

import os
import time
import uuid

import httpx
import jwt
from fastapi import BackgroundTasks, FastAPI, Header, HTTPException

from chatwire.client.server import ServerClient

CHATWIRE = os.environ.get("CHATWIRE_URL", "http://127.0.0.1:8080")
SECRET = os.environ["APP_TOKEN_SECRET"]  # chatwire runs with CHATWIRE_EXTERNAL_SECRET set to the same value
API_KEY = os.environ["CHATWIRE_API_KEY"]  # printed by `chatwire keys create --scope publish`
chatwire = ServerClient(CHATWIRE, API_KEY)
USERS = {"ada": "lovelace", "alan": "turing"}  # your users, your login
ANSWER = "Hello from your app, streamed through chatwire."
app = FastAPI()


@app.post("/login")
async def login(body: dict) -> dict:
    if USERS.get(body.get("username")) != body.get("password"):
        raise HTTPException(401, "wrong username or password")
    name, exp = body["username"], int(time.time()) + 3600
    claims = {"sub": name, "name": name.title(), "iss": "my-app", "aud": "chatwire", "exp": exp}
    return {"token": jwt.encode(claims, SECRET, algorithm="HS256")}


@app.post("/ask")
async def ask(body: dict, background: BackgroundTasks, authorization: str = Header()) -> dict:
    try:
        claims = jwt.decode(authorization.removeprefix("Bearer "), SECRET, ["HS256"], audience="chatwire")
    except jwt.PyJWTError as exc:
        raise HTTPException(401, "log in first") from exc
    async with httpx.AsyncClient(base_url=CHATWIRE, headers={"Authorization": authorization}) as http:
        chat = (await http.post("/api/v1/chats/new", json={"chat": {"title": body["question"]}})).json()
    message_id = uuid.uuid4().hex
    # chatwire's id of this user ("ada@my-app": the app's id in the issuer's namespace), as the chat says
    background.add_task(stream_answer, chat["user_id"], chat["id"], message_id)
    return {"chat_id": chat["id"], "message_id": message_id}


async def stream_answer(user: str, chat_id: str, message_id: str) -> None:
    for word in ANSWER.split(" "):
        await chatwire.chat_event(user, chat_id, message_id, "chat:message:delta", {"content": word + " "})
    await chatwire.chat_event(user, chat_id, message_id, "chat:completion", {"done": True})
