// The Socket.IO connection of one tab: token auth, user-join + heartbeat on every connect, reconnection with
// connection-state recovery, typed listeners, and answers to event calls.

import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client';
import type { ChannelEvent, ChatEvent, ConnectionState, EventCall, Note } from './types';

export const SOCKET_PATH = '/ws/socket.io';
export const HEARTBEAT_MS = 30_000;

type IoFactory = (url: string, opts: Partial<ManagerOptions & SocketOptions>) => Socket;
type Listener<T> = (payload: T, offset: string | null) => void;
/** Answers an event call; the resolved value is the ack sent back to the server. */
export type EventCallHandler = (call: EventCall) => Promise<unknown>;

/** Splits socket.io listener arguments into (payload, stream offset, ack callback). */
export function splitArgs(args: unknown[]): { payload: any; offset: string | null; ack: ((v: unknown) => void) | null } {
  const rest = [...args];
  const ack = typeof rest[rest.length - 1] === 'function' ? (rest.pop() as (v: unknown) => void) : null;
  const offset = rest.length > 1 && typeof rest[rest.length - 1] === 'string' ? (rest.pop() as string) : null;
  return { payload: rest[0], offset, ack };
}

export interface ConnectionOptions {
  url?: string;
  ioFactory?: IoFactory;
  heartbeatMs?: number;
}

export class Connection {
  readonly socket: Socket;
  state: ConnectionState = 'connecting';
  private everConnected = false;
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  private stateListeners = new Set<(s: ConnectionState) => void>();
  private chatListeners = new Set<Listener<ChatEvent>>();
  private channelListeners = new Set<Listener<ChannelEvent>>();
  private noteListeners = new Set<Listener<Note>>();
  private resyncListeners = new Set<() => void>();
  private connectListeners = new Set<(recovered: boolean) => void>();
  private callHandler: EventCallHandler | null = null;

  constructor(
    private token: string,
    opts: ConnectionOptions = {}
  ) {
    const factory = opts.ioFactory ?? io;
    this.socket = factory(opts.url ?? '', {
      path: SOCKET_PATH,
      transports: ['websocket'],
      auth: { token },
      reconnection: true,
      reconnectionDelay: 1000,
      reconnectionDelayMax: 5000,
      autoConnect: false
    });
    const heartbeatMs = opts.heartbeatMs ?? HEARTBEAT_MS;

    this.socket.on('connect', () => {
      const recovered = Boolean(this.socket.recovered);
      this.setState(this.everConnected && recovered ? 'recovered' : 'connected');
      const first = !this.everConnected;
      this.everConnected = true;
      this.socket.emit('user-join', { auth: { token: this.token } });
      if (this.heartbeat) clearInterval(this.heartbeat);
      this.heartbeat = setInterval(() => this.socket.emit('heartbeat', {}), heartbeatMs);
      for (const l of this.connectListeners) l(recovered);
      if (!first && !recovered) for (const l of this.resyncListeners) l();
    });
    this.socket.on('disconnect', (reason: string) => {
      if (this.heartbeat) clearInterval(this.heartbeat);
      this.heartbeat = null;
      if (this.state === 'unauthorized') return;
      this.setState(reason === 'io client disconnect' ? 'offline' : 'reconnecting');
    });
    this.socket.on('connect_error', (err: any) => {
      if (err?.data?.code === 'unauthorized') {
        this.setState('unauthorized');
        this.socket.disconnect();
      } else {
        this.setState(this.everConnected ? 'reconnecting' : 'connecting');
      }
    });
    this.socket.on('events', (...args: unknown[]) => {
      const { payload, offset, ack } = splitArgs(args);
      if (ack) {
        void this.answer(payload as EventCall, ack);
        return;
      }
      // The server dropped events this tab missed (a slow reader's backlog, a fleet bus outage): reload over REST.
      if ((payload as ChatEvent | null)?.data?.type === 'chat:reload') {
        for (const l of this.resyncListeners) l();
        return;
      }
      for (const l of this.chatListeners) l(payload as ChatEvent, offset);
    });
    this.socket.on('events:channel', (...args: unknown[]) => {
      const { payload, offset } = splitArgs(args);
      for (const l of this.channelListeners) l(payload as ChannelEvent, offset);
    });
    this.socket.on('events:note', (...args: unknown[]) => {
      const { payload, offset } = splitArgs(args);
      for (const l of this.noteListeners) l(payload as Note, offset);
    });
  }

  connect(): this {
    this.socket.connect();
    return this;
  }

  close(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.socket.disconnect();
  }

  get id(): string | undefined {
    return this.socket.id;
  }

  private setState(s: ConnectionState): void {
    if (s === this.state) return;
    this.state = s;
    for (const l of this.stateListeners) l(s);
  }

  private async answer(call: EventCall, ack: (v: unknown) => void): Promise<void> {
    try {
      if (!this.callHandler) throw new Error('this tab cannot answer event calls');
      ack(await this.callHandler(call));
    } catch (err) {
      ack({ error: err instanceof Error ? err.message : String(err) });
    }
  }

  private add<T>(set: Set<T>, l: T): () => void {
    set.add(l);
    return () => set.delete(l);
  }

  onState(l: (s: ConnectionState) => void) {
    return this.add(this.stateListeners, l);
  }
  onChat(l: Listener<ChatEvent>) {
    return this.add(this.chatListeners, l);
  }
  onChannel(l: Listener<ChannelEvent>) {
    return this.add(this.channelListeners, l);
  }
  onNote(l: Listener<Note>) {
    return this.add(this.noteListeners, l);
  }
  /** After a reconnection that could not recover the missed events, or `chat:reload`: reload state over REST. */
  onResync(l: () => void) {
    return this.add(this.resyncListeners, l);
  }
  onConnect(l: (recovered: boolean) => void) {
    return this.add(this.connectListeners, l);
  }
  setEventCallHandler(handler: EventCallHandler | null): void {
    this.callHandler = handler;
  }

  /** Replays this user's stream events after `since` (the `stream_offset` of a chat read over REST). */
  catchUp(since: string | number): void {
    this.socket.emit('user-join', { auth: { token: this.token }, since });
  }
  joinChannels(): void {
    this.socket.emit('join-channels', { auth: { token: this.token } });
  }
  joinNote(noteId: string): void {
    this.socket.emit('join-note', { note_id: noteId, auth: { token: this.token } });
  }
  typing(channelId: string, typing: boolean, messageId: string | null = null): void {
    this.socket.emit('events:channel', { channel_id: channelId, message_id: messageId, data: { type: 'typing', data: { typing } } });
  }
  markChannelRead(channelId: string): void {
    this.socket.emit('events:channel', { channel_id: channelId, data: { type: 'last_read_at' } });
  }
  markChatRead(chatId: string): void {
    this.socket.emit('events:chat', { chat_id: chatId, data: { type: 'last_read_at' } });
  }
  usage(model: string, chatId?: string): void {
    this.socket.emit('usage', { model, action: 'generate', chat_id: chatId });
  }
}

/** Remembers the stream offsets already applied, so a replayed event (catch-up, recovery) is applied once. */
export class OffsetFilter {
  private seen = new Set<string>();
  private order: string[] = [];
  constructor(private capacity = 10_000) {}

  /** True the first time `offset` is seen (and always for events without an offset). */
  fresh(offset: string | null): boolean {
    if (offset === null) return true;
    if (this.seen.has(offset)) return false;
    this.seen.add(offset);
    this.order.push(offset);
    if (this.order.length > this.capacity) this.seen.delete(this.order.shift() as string);
    return true;
  }
}
