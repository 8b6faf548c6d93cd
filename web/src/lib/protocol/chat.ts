// Pure reducer of the chat event stream: the "client effect" column of docs/PROTOCOL.md section 4, `events`.

import type { ChatEvent, ChatMessage, ChatState } from './types';

export function emptyChat(id: string, title = 'New chat'): ChatState {
  return { id, title, tags: [], messages: {}, currentId: null, active: false, notifications: [], unknown: [] };
}

/** A chat as `GET /api/v1/chats/{id}` returns it, as state. */
export function chatFromRecord(record: any): ChatState {
  const chat = record?.chat ?? {};
  const history = chat.history ?? {};
  return {
    ...emptyChat(String(record.id), record.title ?? chat.title ?? 'New chat'),
    tags: chat.tags ?? [],
    messages: { ...(history.messages ?? {}) },
    currentId: history.currentId ?? null
  };
}

/** The thread from the root to `currentId`, following parent links; falls back to insertion order. */
export function messageList(state: ChatState): ChatMessage[] {
  const out: ChatMessage[] = [];
  let id = state.currentId;
  const seen = new Set<string>();
  while (id && state.messages[id] && !seen.has(id)) {
    seen.add(id);
    out.unshift(state.messages[id]);
    id = (state.messages[id].parentId as string | null | undefined) ?? null;
  }
  if (out.length === 0) return Object.values(state.messages);
  return out;
}

/** The thread from the root to message `id` (inclusive). */
export function pathTo(state: ChatState, id: string | null): ChatMessage[] {
  const out: ChatMessage[] = [];
  const seen = new Set<string>();
  while (id && state.messages[id] && !seen.has(id)) {
    seen.add(id);
    out.unshift(state.messages[id]);
    id = (state.messages[id].parentId as string | null | undefined) ?? null;
  }
  return out;
}

/** The messages sharing `m`'s parent (roots share "no parent"), in the order they were added; `m` among them. */
export function siblingsOf(state: ChatState, m: ChatMessage): ChatMessage[] {
  const parent = m.parentId ?? null;
  return Object.values(state.messages).filter((x) => (x.parentId ?? null) === parent && x.role === m.role);
}

/** The newest leaf under `id` (following the last child at each step): where moving to a branch lands. */
export function leafOf(state: ChatState, id: string): string {
  const seen = new Set<string>();
  let cursor = id;
  while (!seen.has(cursor)) {
    seen.add(cursor);
    const children = Object.values(state.messages).filter((x) => x.parentId === cursor);
    if (!children.length) break;
    cursor = children[children.length - 1].id;
  }
  return cursor;
}

/** How an answer ended: done, stopped, interrupted, failed; null while it streams (or for user messages). */
export function outcomeOf(m: ChatMessage): 'done' | 'stopped' | 'interrupted' | 'failed' | null {
  if (m.role !== 'assistant' || !m.done) return m.role === 'assistant' && m.error ? 'failed' : null;
  const o = m.outcome;
  if (o === 'done' || o === 'stopped' || o === 'interrupted' || o === 'failed') return o;
  return m.error ? 'failed' : 'done';
}

function keyOf(item: unknown): string {
  if (item && typeof item === 'object') {
    const o = item as Record<string, unknown>;
    for (const k of ['id', 'url', 'name']) if (typeof o[k] === 'string') return `${k}:${o[k]}`;
  }
  return JSON.stringify(item);
}

/** Appends `more` after `existing`, skipping items already there (the (fix) rule for embeds and files). */
export function accumulate<T>(existing: T[] | undefined, more: unknown): T[] {
  const list = [...(existing ?? [])];
  if (!Array.isArray(more)) return list;
  const seen = new Set(list.map(keyOf));
  for (const item of more) {
    const k = keyOf(item);
    if (!seen.has(k)) {
      seen.add(k);
      list.push(item as T);
    }
  }
  return list;
}

/** An answer this tab has not seen started: it follows the thread shown so far, and becomes the current message. */
function placeholder(id: string, parentId: string | null): ChatMessage {
  return { id, parentId, role: 'assistant', content: '', done: false, statusHistory: [], sources: [], files: [], embeds: [] };
}

function withMessage(state: ChatState, id: string, change: (m: ChatMessage) => ChatMessage): ChatState {
  const known = state.messages[id];
  const messages = { ...state.messages, [id]: change(known ?? placeholder(id, state.currentId)) };
  return { ...state, messages, currentId: known ? state.currentId : id };
}

const str = (v: unknown): string => (typeof v === 'string' ? v : v == null ? '' : String(v));

/**
 * The state after one `events` payload. Pure: never mutates `state`; an event of another chat, or a malformed one,
 * returns `state` itself.
 */
export function applyChatEvent(state: ChatState, event: ChatEvent): ChatState {
  if (!event || event.chat_id !== state.id || !event.data || typeof event.data.type !== 'string') return state;
  const { type } = event.data;
  const data: any = event.data.data ?? {};
  const mid = event.message_id;
  switch (type) {
    case 'status':
      return withMessage(state, mid, (m) => ({ ...m, statusHistory: [...(m.statusHistory ?? []), data] }));
    case 'message':
    case 'chat:message:delta':
      return withMessage(state, mid, (m) => ({ ...m, content: m.content + str(data.content) }));
    case 'replace':
    case 'chat:message':
      return withMessage(state, mid, (m) => ({ ...m, content: str(data.content) }));
    case 'embeds':
    case 'chat:message:embeds':
      return withMessage(state, mid, (m) => ({ ...m, embeds: accumulate(m.embeds, data.embeds) }));
    case 'files':
    case 'chat:message:files':
      return withMessage(state, mid, (m) => ({ ...m, files: accumulate(m.files, data.files) }));
    case 'source':
    case 'citation':
      if (data && typeof data === 'object' && data.type) return state; // typed entries (code execution...) are not sources
      return withMessage(state, mid, (m) => ({ ...m, sources: [...(m.sources ?? []), data] }));
    case 'chat:completion': {
      const next = withMessage(state, mid, (m) => {
        const out: ChatMessage = { ...m };
        if (typeof data.content === 'string') out.content = data.content;
        if (Array.isArray(data.sources)) out.sources = data.sources;
        if (data.usage !== undefined) out.usage = data.usage;
        if (data.error !== undefined && data.error !== null) out.error = data.error;
        if (data.done) {
          out.done = true;
          const o = data.outcome;
          if (o === 'done' || o === 'stopped' || o === 'interrupted' || o === 'failed') out.outcome = o;
          else if (!out.outcome) out.outcome = out.error != null ? 'failed' : 'done';
        }
        return out;
      });
      return typeof data.title === 'string' && data.title ? { ...next, title: data.title } : next;
    }
    case 'chat:message:error':
      return withMessage(state, mid, (m) => ({ ...m, error: data.error ?? data }));
    case 'chat:message:follow_ups': {
      const followUps = data.follow_ups ?? data.followUps ?? [];
      return withMessage(state, mid, (m) => ({ ...m, followUps: Array.isArray(followUps) ? followUps : [] }));
    }
    case 'chat:title': {
      const title = typeof event.data.data === 'string' ? event.data.data : data.title;
      return typeof title === 'string' ? { ...state, title } : state;
    }
    case 'chat:tags': {
      const tags = Array.isArray(event.data.data) ? event.data.data : data.tags;
      return Array.isArray(tags) ? { ...state, tags } : state;
    }
    case 'chat:messages': {
      // The stored turn (question and empty answer) of a generation: add what this tab lacks, keep live content.
      const incoming = data.messages && typeof data.messages === 'object' ? data.messages : {};
      const messages = { ...state.messages };
      for (const [id, m] of Object.entries(incoming as Record<string, ChatMessage>)) {
        const known = messages[id];
        messages[id] = known ? { ...m, ...known, parentId: m.parentId ?? known.parentId ?? null } : { ...m };
      }
      const currentId = typeof data.currentId === 'string' && messages[data.currentId] ? data.currentId : state.currentId;
      return { ...state, messages, currentId };
    }
    case 'chat:active':
      return { ...state, active: Boolean(data.active) };
    case 'chat:tasks:cancel':
      return { ...withMessage(state, mid, (m) => ({ ...m, done: true, outcome: m.outcome ?? 'stopped' })), active: false };
    case 'notification':
      return {
        ...state,
        notifications: [...state.notifications, { type: str(data.type) || 'info', content: str(data.content) }]
      };
    default:
      return { ...state, unknown: [...state.unknown, event] };
  }
}
