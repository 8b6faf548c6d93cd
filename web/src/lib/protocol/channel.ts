// Pure reducer of `events:channel`: the client side of docs/PROTOCOL.md section 4's channel table.

import type { ChannelEvent, ChannelMessage, ChannelsState, ChannelSummary, Reaction } from './types';

/** How long a "X is typing…" indicator lives without a new `typing` event. */
export const TYPING_TTL_MS = 5000;

/** Whether `userId` is among a reaction's users (Open WebUI's `users`, or the older `user_ids`). */
export function reactedBy(reaction: Reaction, userId: string): boolean {
  return reaction.users ? reaction.users.some((u) => u.id === userId) : (reaction.user_ids ?? []).includes(userId);
}

/** Who reacted, by name, for a tooltip ("Ada, Bob"); ids stand in where a reaction carries no names. */
export function reactionNames(reaction: Reaction): string {
  return (reaction.users?.map((u) => u.name) ?? reaction.user_ids ?? []).join(', ');
}

export function emptyChannels(selfId: string): ChannelsState {
  return { selfId, channels: [], activeId: null, messages: [], threads: {}, typing: {}, stale: false };
}

/** Sets the channel list (from REST), keeping the rest. */
export function withChannels(state: ChannelsState, channels: ChannelSummary[]): ChannelsState {
  return { ...state, channels, stale: false };
}

/** Opens a channel with its messages from REST (newest first, as the API returns them) and clears its unread count. */
export function openChannel(state: ChannelsState, channelId: string, newestFirst: ChannelMessage[]): ChannelsState {
  return {
    ...state,
    activeId: channelId,
    messages: [...newestFirst].reverse(),
    threads: {},
    channels: state.channels.map((c) => (c.id === channelId ? { ...c, unread_count: 0 } : c))
  };
}

/** Loads the replies of one thread (from REST, any order) into the state. */
export function openThread(state: ChannelsState, parentId: string, replies: ChannelMessage[]): ChannelsState {
  const sorted = [...replies].sort((a, b) => a.created_at - b.created_at);
  return { ...state, threads: { ...state.threads, [parentId]: sorted } };
}

/** Adds an optimistic message (with `temp_id` and `pending`) before the server confirms it. */
export function addPending(state: ChannelsState, message: ChannelMessage): ChannelsState {
  const pending = { ...message, pending: true };
  if (message.parent_id) {
    const thread = state.threads[message.parent_id] ?? [];
    return { ...state, threads: { ...state.threads, [message.parent_id]: [...thread, pending] } };
  }
  return { ...state, messages: [...state.messages, pending] };
}

/** Inserts `m` into `list`: replaces the optimistic copy (same temp_id) or the same id, else appends in time order. */
function upsert(list: ChannelMessage[], m: ChannelMessage): ChannelMessage[] {
  const clean = { ...m, pending: false };
  const at = list.findIndex((x) => x.id === m.id || (m.temp_id !== undefined && x.temp_id === m.temp_id && x.pending));
  if (at >= 0) return list.map((x, i) => (i === at ? clean : x));
  const out = [...list, clean];
  if (out.length > 1 && out[out.length - 2].created_at > clean.created_at) out.sort((a, b) => a.created_at - b.created_at);
  return out;
}

/** Applies `change` to the message with `id` wherever it is shown (top level and threads). */
function patch(state: ChannelsState, id: string, change: (m: ChannelMessage) => ChannelMessage): ChannelsState {
  let touched = false;
  const apply = (list: ChannelMessage[]) =>
    list.map((m) => {
      if (m.id !== id) return m;
      touched = true;
      return change(m);
    });
  const messages = apply(state.messages);
  const threads: Record<string, ChannelMessage[]> = {};
  for (const [k, v] of Object.entries(state.threads)) threads[k] = apply(v);
  return touched ? { ...state, messages, threads } : state;
}

function remove(state: ChannelsState, id: string): ChannelsState {
  const threads: Record<string, ChannelMessage[]> = {};
  for (const [k, v] of Object.entries(state.threads)) if (k !== id) threads[k] = v.filter((m) => m.id !== id);
  return { ...state, messages: state.messages.filter((m) => m.id !== id), threads };
}

function withTyping(state: ChannelsState, channelId: string, userId: string, entry: ChannelsState['typing'][string][string] | null): ChannelsState {
  const forChannel = { ...(state.typing[channelId] ?? {}) };
  if (entry) forChannel[userId] = entry;
  else if (userId in forChannel) delete forChannel[userId];
  else return state;
  return { ...state, typing: { ...state.typing, [channelId]: forChannel } };
}

/**
 * The state after one `events:channel` payload, at time `now` (epoch ms; only `typing` uses it). Pure: never mutates
 * `state`; events of channels other than the open one only move unread counts and typing indicators.
 */
export function applyChannelEvent(state: ChannelsState, event: ChannelEvent, now: number = Date.now()): ChannelsState {
  if (!event || !event.data || typeof event.data.type !== 'string') return state;
  const { type } = event.data;
  const data: any = event.data.data;
  const channelId = event.channel_id;
  const isOpen = channelId === state.activeId;
  const actor = event.user;

  switch (type) {
    case 'message': {
      const m = data as ChannelMessage;
      if (!m || typeof m.id !== 'string') return state;
      let next = state;
      // A message ends its author's typing indicator.
      if (actor) next = withTyping(next, channelId, actor.id, null);
      if (!isOpen) {
        if (m.parent_id || m.user_id === state.selfId) return next;
        return {
          ...next,
          channels: next.channels.map((c) => (c.id === channelId ? { ...c, unread_count: (c.unread_count ?? 0) + 1 } : c))
        };
      }
      if (m.parent_id) {
        const thread = next.threads[m.parent_id];
        if (!thread) return next; // thread not open: `message:reply` updates the count
        return { ...next, threads: { ...next.threads, [m.parent_id]: upsert(thread, m) } };
      }
      return { ...next, messages: upsert(next.messages, m) };
    }
    case 'message:reply': {
      const parent = data as ChannelMessage;
      if (!isOpen || !parent || typeof parent.id !== 'string') return state;
      return patch(state, parent.id, (m) => ({ ...m, reply_count: parent.reply_count }));
    }
    case 'message:update': {
      const m = data as ChannelMessage;
      if (!isOpen || !m || typeof m.id !== 'string') return state;
      return patch(state, m.id, (old) => ({ ...old, content: m.content, data: m.data ?? old.data, updated_at: m.updated_at }));
    }
    case 'message:delete': {
      const id = (data && data.id) ?? event.message_id;
      if (!isOpen || typeof id !== 'string') return state;
      return remove(state, id);
    }
    case 'message:reaction:add':
    case 'message:reaction:remove': {
      const m = data as ChannelMessage;
      if (!isOpen || !m || typeof m.id !== 'string') return state;
      return patch(state, m.id, (old) => ({ ...old, reactions: m.reactions ?? [] }));
    }
    case 'typing': {
      if (!actor || actor.id === state.selfId) return state;
      const typing = Boolean(data && data.typing);
      return withTyping(state, channelId, actor.id, typing ? { id: actor.id, name: actor.name, until: now + TYPING_TTL_MS } : null);
    }
    case 'channel:created':
      return { ...state, stale: true };
    default:
      return state;
  }
}

/** Drops typing indicators whose time is up. Returns `state` itself when nothing expired. */
export function expireTyping(state: ChannelsState, now: number = Date.now()): ChannelsState {
  let changed = false;
  const typing: ChannelsState['typing'] = {};
  for (const [cid, users] of Object.entries(state.typing)) {
    const kept: Record<string, ChannelsState['typing'][string][string]> = {};
    for (const [uid, t] of Object.entries(users)) {
      if (t.until > now) kept[uid] = t;
      else changed = true;
    }
    typing[cid] = kept;
  }
  return changed ? { ...state, typing } : state;
}

/** "Ada is typing…", "Ada and Bob are typing…", "Several people are typing…", or '' for the open channel. */
export function typingLine(state: ChannelsState, channelId: string | null = state.activeId, now: number = Date.now()): string {
  if (!channelId) return '';
  const names = Object.values(state.typing[channelId] ?? {})
    .filter((t) => t.until > now && t.id !== state.selfId)
    .map((t) => t.name);
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return 'Several people are typing…';
}

/**
 * A channel's member list after a `presence` event (`{user_id, online}` in `events:channel`): the member's
 * `is_active` follows it. Returns `members` itself for other events, other channels, or strangers.
 */
export function applyPresence<M extends { id: string; is_active?: boolean }>(
  members: M[],
  channelId: string | null,
  event: ChannelEvent
): M[] {
  if (event?.data?.type !== 'presence' || event.channel_id !== channelId) return members;
  const d: any = event.data.data;
  if (!d || typeof d.user_id !== 'string' || typeof d.online !== 'boolean') return members;
  const i = members.findIndex((m) => m.id === d.user_id);
  if (i < 0 || Boolean(members[i].is_active) === d.online) return members;
  const next = members.slice();
  next[i] = { ...members[i], is_active: d.online };
  return next;
}
