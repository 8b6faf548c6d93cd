import { describe, expect, it } from 'vitest';
import * as Y from 'yjs';
import { colorFor, NOTE_FRAGMENT, SocketYProvider, toBytes } from './collab';
import { FakeSocket } from './fake-socket';

/** A tiny stand-in for the server's doc room: keeps the state and relays to the other members. */
class Room {
  doc = new Y.Doc();
  members = new Map<FakeSocket, string>();
  add(socket: FakeSocket, userId: string) {
    this.members.set(socket, userId);
    socket.onEmit = (event, p) => {
      if (event === 'ydoc:document:join') {
        socket.fire('ydoc:document:state', { document_id: p.document_id, state: Array.from(Y.encodeStateAsUpdate(this.doc)), sessions: [] });
        this.others(socket, 'ydoc:user:joined', { document_id: p.document_id, user_id: userId, user_name: p.user_name });
      } else if (event === 'ydoc:document:update' && p.update) {
        Y.applyUpdate(this.doc, Uint8Array.from(p.update));
        this.others(socket, event, { document_id: p.document_id, user_id: userId, update: p.update, socket_id: socket.id });
      } else if (event === 'ydoc:awareness:update') {
        this.others(socket, event, { document_id: p.document_id, user_id: userId, update: p.update });
      } else if (event === 'ydoc:document:leave') {
        this.others(socket, 'ydoc:user:left', { document_id: p.document_id, user_id: userId });
      }
    };
  }
  others(from: FakeSocket, event: string, payload: unknown) {
    for (const s of this.members.keys()) if (s !== from) s.fire(event, payload);
  }
}

function pair() {
  const room = new Room();
  const sa = new FakeSocket('sa');
  const sb = new FakeSocket('sb');
  room.add(sa, 'ua');
  room.add(sb, 'ub');
  sa.connected = sb.connected = true;
  const a = new SocketYProvider(sa as any, 'note:n1', { id: 'ua', name: 'Ada', color: colorFor('ua') });
  const b = new SocketYProvider(sb as any, 'note:n1', { id: 'ub', name: 'Bob', color: colorFor('ub') });
  return { room, sa, sb, a, b };
}

const text = (p: SocketYProvider) => p.doc.getXmlFragment(NOTE_FRAGMENT).toString();

describe('SocketYProvider', () => {
  it('joins with the user and syncs edits both ways through the room', () => {
    const { sa, a, b } = pair();
    expect(sa.sentOf('ydoc:document:join')[0]).toMatchObject({ document_id: 'note:n1', user_id: 'ua', user_name: 'Ada' });
    expect(a.synced && b.synced).toBe(true);
    const para = new Y.XmlElement('paragraph');
    para.insert(0, [new Y.XmlText('hello from Ada')]);
    a.doc.getXmlFragment(NOTE_FRAGMENT).insert(0, [para]);
    const pb = new Y.XmlElement('paragraph');
    pb.insert(0, [new Y.XmlText('and Bob')]);
    b.doc.getXmlFragment(NOTE_FRAGMENT).insert(1, [pb]);
    expect(text(a)).toBe(text(b));
    expect(text(a)).toContain('hello from Ada');
    expect(text(a)).toContain('and Bob');
  });

  it('a late joiner gets the state; nothing echoes back to the sender', () => {
    const { room, sa, a } = pair();
    a.doc.getXmlFragment(NOTE_FRAGMENT).insert(0, [new Y.XmlText('early')]);
    const sc = new FakeSocket('sc');
    room.add(sc, 'uc');
    sc.connected = true;
    const c = new SocketYProvider(sc as any, 'note:n1', { id: 'uc', name: 'Cy', color: 'red' });
    expect(text(c)).toBe('early');
    expect(sa.sentOf('ydoc:document:update').every((p) => Array.isArray(p.update))).toBe(true);
  });

  it('shares awareness (names for cursors) and drops a peer who leaves', () => {
    const { a, b } = pair();
    const names = (p: SocketYProvider) => [...p.awareness.getStates().values()].map((s: any) => s.user?.name).sort();
    expect(names(a)).toEqual(['Ada', 'Bob']);
    expect(names(b)).toEqual(['Ada', 'Bob']);
    b.destroy();
    expect(names(a)).toEqual(['Ada']);
  });

  it('ignores events of other documents and rejoins on reconnect', () => {
    const { sa, a } = pair();
    sa.fire('ydoc:document:update', { document_id: 'note:other', update: Array.from(Y.encodeStateAsUpdate(new Y.Doc())) });
    const joins = sa.sentOf('ydoc:document:join').length;
    sa.fire('connect');
    expect(sa.sentOf('ydoc:document:join').length).toBe(joins + 1);
    expect(a.synced).toBe(true);
  });

  it('sends save-only content messages', () => {
    const { sa, a } = pair();
    a.saveContent({ md: 'x', html: '<p>x</p>', json: null });
    expect(sa.sentOf('ydoc:document:update').at(-1)).toEqual({ document_id: 'note:n1', data: { content: { md: 'x', html: '<p>x</p>', json: null } } });
  });

  it("accepts Open WebUI's JSON awareness updates", () => {
    const { sa, a } = pair();
    const json = new TextEncoder().encode(JSON.stringify({ 4242: { user: { name: 'Owui', color: '#f00' } } }));
    sa.fire('ydoc:awareness:update', { document_id: 'note:n1', user_id: 'uo', update: Array.from(json) });
    expect((a.awareness.getStates().get(4242) as any).user.name).toBe('Owui');
    sa.fire('ydoc:awareness:update', { document_id: 'note:n1', user_id: 'uo', update: [1, 2, 255] });
    expect(a.awareness.getStates().size).toBe(3);
  });

  it('toBytes accepts int arrays and binary', () => {
    expect(Array.from(toBytes([1, 2]))).toEqual([1, 2]);
    expect(Array.from(toBytes(new Uint8Array([3]).buffer))).toEqual([3]);
  });
});
