"""Generations on Open WebUI's paths: models, start a streamed completion, stop it (by task or by chat)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from chatwire.api.deps import ServicesDep, UserDep
from chatwire.protocol import CompletionForm

router = APIRouter(tags=["completions"])


@router.get("/api/models")
async def models(_user: UserDep, services: ServicesDep) -> dict[str, Any]:
    return {"data": await services.completions.models()}


@router.post("/api/chat/completions")
async def chat_completions(form: CompletionForm, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    return await services.completions.start(
        user,
        model=form.model,
        messages=form.messages,
        chat_id=form.chat_id,
        message_id=form.answer_id,
        session_id=form.session_id,
        user_message=form.user_message,
        parent_id=form.parent_id,
        new_chat=form.new_chat,
    )


@router.post("/api/tasks/stop/{task_id}")
async def stop_task(task_id: str, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    await services.completions.stop(task_id, user)
    return {"status": True, "message": f"stopped {task_id}"}


@router.get("/api/tasks/chat/{chat_id}")
async def chat_tasks(chat_id: str, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    return {"task_ids": services.completions.task_ids_for_chat(chat_id, user)}


@router.post("/api/tasks/chat/{chat_id}/stop")
async def stop_chat_tasks(chat_id: str, user: UserDep, services: ServicesDep) -> dict[str, Any]:
    """Stop the chat's generations from any tab of the user (the starting tab's task id is not needed)."""
    stopped = await services.completions.stop_chat(chat_id, user)
    return {"status": True, "message": "stopped" if stopped else "No tasks found."}
