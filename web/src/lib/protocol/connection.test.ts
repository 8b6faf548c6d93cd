import { afterEach, describe, expect, it, vi } from 'vitest';
import { Connection, OffsetFilter, splitArgs } from './connection';
import { FakeSocket } from './fake-socket';
import type { ConnectionState } from './types';

function setup() {
  const fake = new FakeSocket();
  let opts: any = null;
  const conn = new Connection('tok', {
    ioFactory: (_url, o) => {
      opts = o;
      return fake as any;
    },
    heartbeatMs: 1000
  });
  const states: ConnectionState[] = [];
  conn.onState((s) => states.push(s));
  return { fake, conn, states, opts: () => opts };
}

afterEach(() => vi.useRealTimers());

describe('Connection', () => {
  it('connects on the protocol path with the token and joins on every connect', () => {
    const { fake, conn, opts } = setup();
    expect(opts()).toMatchObject({ path: '/ws/socket.io', auth: { token: 'tok' }, reconnectionDelay: 1000, reconnectionDelayMax: 5000 });
    conn.connect();
    expect(conn.state).toBe('connected');
    expect(fake.sentOf('user-join')).toEqual([{ auth: { token: 'tok' } }]);
    fake.fire('disconnect', 'transport close');
    fake.connected = true;
    fake.fire('connect');
    expect(fake.sentOf('user-join')).toHaveLength(2);
    conn.close();
  });

  it('reports reconnecting, then recovered or a resync when recovery failed', () => {
    const { fake, conn, states } = setup();
    const resyncs: number[] = [];
    conn.onResync(() => resyncs.push(1));
    conn.connect();
    fake.fire('disconnect', 'transport close');
    expect(conn.state).toBe('reconnecting');
    fake.recovered = true;
    fake.fire('connect');
    expect(conn.state).toBe('recovered');
    expect(resyncs).toHaveLength(0);
    fake.fire('disconnect', 'ping timeout');
    fake.recovered = false;
    fake.fire('connect');
    expect(conn.state).toBe('connected');
    expect(resyncs).toHaveLength(1);
    expect(states).toEqual(['connected', 'reconnecting', 'recovered', 'reconnecting', 'connected']);
    conn.close();
    expect(conn.state).toBe('offline');
  });

  it('a chat:reload event asks for a resync instead of reaching the chat listeners', () => {
    const { fake, conn } = setup();
    const resyncs: number[] = [];
    const chats: unknown[] = [];
    conn.onResync(() => resyncs.push(1));
    conn.onChat((e) => chats.push(e));
    conn.connect();
    fake.fire('events', { chat_id: null, message_id: null, data: { type: 'chat:reload', data: {} } });
    expect(resyncs).toHaveLength(1);
    expect(chats).toHaveLength(0);
  });

  it('an unauthorized connect_error stops reconnecting', () => {
    const { fake, conn } = setup();
    const err = Object.assign(new Error('unauthorized'), { data: { code: 'unauthorized' } });
    fake.fire('connect_error', err);
    expect(conn.state).toBe('unauthorized');
  });

  it('sends a heartbeat every interval while connected', () => {
    vi.useFakeTimers();
    const { fake, conn } = setup();
    conn.connect();
    vi.advanceTimersByTime(3500);
    expect(fake.sentOf('heartbeat')).toHaveLength(3);
    fake.fire('disconnect', 'transport close');
    vi.advanceTimersByTime(5000);
    expect(fake.sentOf('heartbeat')).toHaveLength(3);
  });

  it('passes chat, channel and note events with their offsets to listeners', () => {
    const { fake, conn } = setup();
    const got: unknown[] = [];
    conn.onChat((p, o) => got.push(['chat', p, o]));
    conn.onChannel((p, o) => got.push(['channel', p, o]));
    conn.onNote((p, o) => got.push(['note', p, o]));
    fake.fire('events', { chat_id: 'c' }, '17');
    fake.fire('events:channel', { channel_id: 'x' });
    fake.fire('events:note', { id: 'n' }, '18');
    expect(got).toEqual([
      ['chat', { chat_id: 'c' }, '17'],
      ['channel', { channel_id: 'x' }, null],
      ['note', { id: 'n' }, '18']
    ]);
  });

  it('answers an event call through the ack with the handler result, or an error', async () => {
    const { fake, conn } = setup();
    const chatEvents: unknown[] = [];
    conn.onChat((p) => chatEvents.push(p));
    const acks: unknown[] = [];
    fake.fire('events', { data: { type: 'confirmation' } }, (v: unknown) => acks.push(v));
    await Promise.resolve();
    expect(acks).toEqual([{ error: 'this tab cannot answer event calls' }]);
    conn.setEventCallHandler(async (call) => call.data.type === 'confirmation');
    fake.fire('events', { data: { type: 'confirmation', data: { title: 't' } } }, (v: unknown) => acks.push(v));
    await new Promise((r) => setTimeout(r, 0));
    expect(acks[1]).toBe(true);
    expect(chatEvents).toEqual([]);
  });

  it('emits the client events of docs/PROTOCOL.md section 3', () => {
    const { fake, conn } = setup();
    conn.typing('ch', true);
    conn.markChannelRead('ch');
    conn.markChatRead('c1');
    conn.joinNote('n1');
    conn.joinChannels();
    conn.catchUp('42');
    conn.usage('demo', 'c1');
    expect(fake.sent).toEqual([
      { event: 'events:channel', payload: { channel_id: 'ch', message_id: null, data: { type: 'typing', data: { typing: true } } } },
      { event: 'events:channel', payload: { channel_id: 'ch', data: { type: 'last_read_at' } } },
      { event: 'events:chat', payload: { chat_id: 'c1', data: { type: 'last_read_at' } } },
      { event: 'join-note', payload: { note_id: 'n1', auth: { token: 'tok' } } },
      { event: 'join-channels', payload: { auth: { token: 'tok' } } },
      { event: 'user-join', payload: { auth: { token: 'tok' }, since: '42' } },
      { event: 'usage', payload: { model: 'demo', action: 'generate', chat_id: 'c1' } }
    ]);
  });
});

describe('splitArgs and OffsetFilter', () => {
  it('splits payload, offset and ack', () => {
    const ack = () => {};
    expect(splitArgs([{ a: 1 }])).toEqual({ payload: { a: 1 }, offset: null, ack: null });
    expect(splitArgs([{ a: 1 }, '9'])).toEqual({ payload: { a: 1 }, offset: '9', ack: null });
    expect(splitArgs([{ a: 1 }, ack])).toEqual({ payload: { a: 1 }, offset: null, ack });
    expect(splitArgs(['only-a-string'])).toEqual({ payload: 'only-a-string', offset: null, ack: null });
  });

  it('lets each offset through once and forgets the oldest beyond capacity', () => {
    const f = new OffsetFilter(2);
    expect([f.fresh('1'), f.fresh('1'), f.fresh(null), f.fresh(null)]).toEqual([true, false, true, true]);
    f.fresh('2');
    f.fresh('3');
    expect(f.fresh('1')).toBe(true);
    expect(f.fresh('3')).toBe(false);
  });
});
