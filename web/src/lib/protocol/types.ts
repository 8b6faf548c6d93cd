// Wire types of chatwire's Socket.IO protocol (docs/PROTOCOL.md sections 3-4) and of the REST shapes the client reads.

export interface UserBrief {
  id: string;
  name: string;
  role?: string;
}

export interface Session extends UserBrief {
  token: string;
  email: string;
  role: string;
}

/** `{type, data}`: the inner part of every `events` / `events:channel` payload. */
export interface TypedData<T = unknown> {
  type: string;
  data?: T;
}

/** `events` to `user:{id}`: one step of a chat generation (or a notification). */
export interface ChatEvent {
  chat_id: string;
  message_id: string;
  data: TypedData<any>;
}

export interface StatusEntry {
  action?: string;
  description?: string;
  done?: boolean;
  hidden?: boolean;
  [key: string]: unknown;
}

export interface ChatMessage {
  id: string;
  parentId?: string | null;
  childrenIds?: string[];
  role: 'user' | 'assistant' | 'system';
  content: string;
  model?: string;
  timestamp?: number;
  done?: boolean;
  statusHistory?: StatusEntry[];
  sources?: Record<string, unknown>[];
  files?: Record<string, unknown>[];
  embeds?: unknown[];
  error?: unknown;
  usage?: Record<string, unknown>;
  followUps?: string[];
  /** How an answer ended (set with `done`). */
  outcome?: 'done' | 'stopped' | 'interrupted' | 'failed';
  [key: string]: unknown;
}

export interface Notification {
  type: string;
  content: string;
}

/** What the chat page shows for one chat; `applyChatEvent` moves it forward. */
export interface ChatState {
  id: string;
  title: string;
  tags: unknown[];
  messages: Record<string, ChatMessage>;
  currentId: string | null;
  /** `chat:active`: a generation runs, show the stop button. */
  active: boolean;
  notifications: Notification[];
  /** Events of types the reducer does not know, for other listeners. */
  unknown: ChatEvent[];
}

/** A channel message as the REST API and `events:channel` carry it. */
export interface ChannelMessage {
  id: string;
  channel_id: string;
  user_id: string;
  parent_id: string | null;
  content: string;
  reply_count: number;
  reactions: Reaction[];
  created_at: number;
  updated_at: number;
  user?: UserBrief | null;
  temp_id?: string;
  data?: Record<string, unknown> | null;
  /** Client-only: posted optimistically, not yet confirmed by the server. */
  pending?: boolean;
}

export interface Reaction {
  name: string;
  /** Open WebUI's shape: who reacted, with names (chatwire sends it beside `user_ids`). */
  users?: { id: string; name: string }[];
  user_ids: string[];
  count: number;
}

/** `events:channel` envelope. */
export interface ChannelEvent {
  channel_id: string;
  message_id?: string | null;
  data: TypedData<any>;
  user?: UserBrief;
}

export interface ChannelSummary {
  id: string;
  name: string;
  description?: string | null;
  type?: string | null;
  is_private?: boolean;
  unread_count?: number;
  user_id?: string;
  [key: string]: unknown;
}

export interface TypingUser {
  id: string;
  name: string;
  /** Epoch ms after which the indicator is gone. */
  until: number;
}

/** Everything the channels page shows; `applyChannelEvent` moves it forward. */
export interface ChannelsState {
  selfId: string;
  channels: ChannelSummary[];
  activeId: string | null;
  /** Top-level messages of the open channel, oldest first. */
  messages: ChannelMessage[];
  /** Replies of the open thread(s), by parent id, oldest first. */
  threads: Record<string, ChannelMessage[]>;
  /** Who types, by channel id then user id. */
  typing: Record<string, Record<string, TypingUser>>;
  /** Set when the channel list must be reloaded over REST (`channel:created`). */
  stale: boolean;
}

export interface Note {
  id: string;
  user_id: string;
  title: string;
  data?: { content?: { md?: string; html?: string; json?: unknown } } | null;
  access_control?: AccessControl | null;
  created_at: number;
  updated_at: number;
}

export interface AccessControl {
  read: { user_ids: string[]; group_ids?: string[] };
  write: { user_ids: string[]; group_ids?: string[] };
}

export interface Model {
  id: string;
  name?: string;
  [key: string]: unknown;
}

/** An event call: `sio.call("events", ...)` to this tab, answered through the ack. */
export interface EventCall {
  chat_id?: string;
  message_id?: string;
  data: TypedData<any>;
}

export type ConnectionState =
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'recovered'
  | 'offline'
  | 'unauthorized';

/** An entry of the user directory (`/api/v1/users/search`) or of a channel's member list. */
export interface DirectoryUser {
  id: string;
  name: string;
  is_active?: boolean;
  email?: string;
  role?: string;
}
