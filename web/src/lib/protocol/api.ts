// REST client for the subset of Open WebUI's API that chatwire serves (docs/PROTOCOL.md section 6).

import type { AccessControl, ChannelMessage, ChannelSummary, DirectoryUser, Model, Note, Session } from './types';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code?: string
  ) {
    super(message);
  }
}

function detail(body: any, status: number): string {
  const d = body?.detail;
  if (typeof d === 'string') return d;
  if (Array.isArray(d) && d.length) return d.map((e) => `${(e.loc ?? []).slice(1).join('.')}: ${e.msg}`).join('; ');
  return `request failed (${status})`;
}

/** A thin typed wrapper over fetch; `token` is sent as a Bearer header. */
export class Api {
  constructor(
    public token: string | null = null,
    readonly base: string = ''
  ) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const res = await fetch(this.base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body)
    });
    const text = await res.text();
    let json: any = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!res.ok) throw new ApiError(res.status, detail(json, res.status), json?.code);
    return json as T;
  }

  // auth
  signup(name: string, email: string, password: string) {
    return this.request<Session>('POST', '/api/v1/auths/signup', { name, email, password });
  }
  signin(email: string, password: string) {
    return this.request<Session>('POST', '/api/v1/auths/signin', { email, password });
  }
  me() {
    return this.request<Session>('GET', '/api/v1/auths/');
  }
  signout() {
    return this.request<unknown>('POST', '/api/v1/auths/signout');
  }
  /** The user directory (any signed-in user): names and ids; emails only of oneself, or for an admin. */
  searchUsers(query: string, page = 1) {
    return this.request<{ users: DirectoryUser[]; total: number }>(
      'GET',
      `/api/v1/users/search?query=${encodeURIComponent(query)}&page=${page}`
    );
  }
  userInfo(id: string) {
    return this.request<DirectoryUser>('GET', `/api/v1/users/${encodeURIComponent(id)}/info`);
  }

  // chats
  models() {
    return this.request<{ data: Model[] } | Model[]>('GET', '/api/models').then((r) => (Array.isArray(r) ? r : r.data ?? []));
  }
  chats() {
    return this.request<{ id: string; title: string; updated_at: number }[]>('GET', '/api/v1/chats/');
  }
  renameChat(id: string, title: string) {
    return this.request<any>('POST', `/api/v1/chats/${encodeURIComponent(id)}`, { chat: { title } });
  }
  deleteChat(id: string) {
    return this.request<boolean>('DELETE', `/api/v1/chats/${encodeURIComponent(id)}`);
  }
  chat(id: string) {
    return this.request<any>('GET', `/api/v1/chats/${encodeURIComponent(id)}`);
  }
  newChat(chat: Record<string, unknown>) {
    return this.request<any>('POST', '/api/v1/chats/new', { chat });
  }
  complete(body: {
    model: string;
    messages: { role: string; content: string }[];
    chat_id: string;
    id: string;
    session_id: string;
    stream: true;
    user_message?: { id: string; content?: string; parentId?: string | null; role?: string; timestamp?: number };
    parent_id?: string | null;
  }) {
    return this.request<{ status: boolean; task_id: string; chat_id: string; message_id: string }>('POST', '/api/chat/completions', body);
  }
  stop(taskId: string) {
    return this.request<unknown>('POST', `/api/tasks/stop/${encodeURIComponent(taskId)}`);
  }
  /** Stops the chat's generations, whichever tab started them. */
  stopChat(chatId: string) {
    return this.request<{ status: boolean; message: string }>('POST', `/api/tasks/chat/${encodeURIComponent(chatId)}/stop`);
  }
  /** Merges `chat` into the stored chat (title, history.currentId, messages). */
  updateChat(id: string, chat: Record<string, unknown>) {
    return this.request<any>('POST', `/api/v1/chats/${encodeURIComponent(id)}`, { chat });
  }

  // channels
  channels() {
    return this.request<ChannelSummary[]>('GET', '/api/v1/channels/');
  }
  channel(id: string) {
    return this.request<ChannelSummary & { user_ids: string[] }>('GET', `/api/v1/channels/${id}`);
  }
  createChannel(body: { name: string; description?: string; type?: string | null; is_private?: boolean; user_ids?: string[] }) {
    return this.request<ChannelSummary>('POST', '/api/v1/channels/create', body);
  }
  members(channelId: string) {
    return this.request<{ users: DirectoryUser[]; total: number }>('GET', `/api/v1/channels/${channelId}/members`);
  }
  addMembers(channelId: string, userIds: string[]) {
    return this.request<ChannelSummary & { user_ids: string[] }>('POST', `/api/v1/channels/${channelId}/update/members/add`, { user_ids: userIds });
  }
  removeMembers(channelId: string, userIds: string[]) {
    return this.request<ChannelSummary & { user_ids: string[] }>('POST', `/api/v1/channels/${channelId}/update/members/remove`, { user_ids: userIds });
  }
  deleteChannel(channelId: string) {
    return this.request<boolean>('DELETE', `/api/v1/channels/${channelId}/delete`);
  }
  messages(channelId: string, skip = 0, limit = 50) {
    return this.request<ChannelMessage[]>('GET', `/api/v1/channels/${channelId}/messages?skip=${skip}&limit=${limit}`);
  }
  thread(channelId: string, messageId: string) {
    return this.request<ChannelMessage[]>('GET', `/api/v1/channels/${channelId}/messages/${messageId}/thread`);
  }
  post(channelId: string, content: string, parentId: string | null, tempId: string) {
    return this.request<ChannelMessage>('POST', `/api/v1/channels/${channelId}/messages/post`, {
      content,
      parent_id: parentId,
      temp_id: tempId
    });
  }
  editMessage(channelId: string, messageId: string, content: string) {
    return this.request<ChannelMessage>('POST', `/api/v1/channels/${channelId}/messages/${messageId}/update`, { content });
  }
  deleteMessage(channelId: string, messageId: string) {
    return this.request<boolean>('DELETE', `/api/v1/channels/${channelId}/messages/${messageId}/delete`);
  }
  react(channelId: string, messageId: string, name: string, add: boolean) {
    return this.request<ChannelMessage>(
      'POST',
      `/api/v1/channels/${channelId}/messages/${messageId}/reactions/${add ? 'add' : 'remove'}`,
      { name }
    );
  }

  // notes
  notes() {
    return this.request<Note[]>('GET', '/api/v1/notes/');
  }
  note(id: string) {
    return this.request<Note>('GET', `/api/v1/notes/${id}`);
  }
  createNote(title: string) {
    return this.request<Note>('POST', '/api/v1/notes/create', {
      title,
      data: { content: { md: '', html: '', json: null } },
      access_control: { read: { user_ids: [] }, write: { user_ids: [] } }
    });
  }
  updateNote(id: string, changes: Partial<Pick<Note, 'title' | 'data'>>) {
    return this.request<Note>('POST', `/api/v1/notes/${id}/update`, changes);
  }
  shareNote(id: string, access_control: AccessControl) {
    return this.request<Note>('POST', `/api/v1/notes/${id}/access/update`, { access_control });
  }
  deleteNote(id: string) {
    return this.request<boolean>('DELETE', `/api/v1/notes/${id}/delete`);
  }
}
