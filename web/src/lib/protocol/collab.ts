// Yjs collaboration over chatwire's `ydoc:*` events: one Y.Doc + Awareness per open note, synced through the server.

import * as Y from 'yjs';
import { Awareness, applyAwarenessUpdate, encodeAwarenessUpdate, removeAwarenessStates } from 'y-protocols/awareness';
import type { Socket } from 'socket.io-client';

/** The shared type that holds a note's rich text (the name Open WebUI's editor uses). */
export const NOTE_FRAGMENT = 'prosemirror';
const REMOTE = 'chatwire-remote';

export const toBytes = (u: unknown): Uint8Array =>
  u instanceof Uint8Array ? u : u instanceof ArrayBuffer ? new Uint8Array(u) : Uint8Array.from((u as number[]) ?? []);

export interface CollabUser {
  id: string;
  name: string;
  color: string;
}

// 700 shades: white initials on them keep a 4.5:1 contrast.
const PALETTE = ['#be123c', '#be185d', '#7e22ce', '#4338ca', '#1d4ed8', '#0e7490', '#0f766e', '#047857', '#4d7c0f', '#a16207', '#c2410c', '#b91c1c'];

/** A stable, readable hex color for a user id (hex, as y-prosemirror's cursors require). */
export function colorFor(id: string): string {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

/**
 * Binds a Y.Doc to the room `doc_{documentId}`: joins, applies the server's state and peers' updates, sends local
 * updates and awareness (cursors), and rejoins after a reconnection (sending its whole state, which Yjs merges).
 */
export class SocketYProvider {
  readonly doc = new Y.Doc();
  readonly awareness = new Awareness(this.doc);
  synced = false;
  /** Sessions in the room when the state arrived (from `ydoc:document:state`). */
  sessions: string[] = [];
  private syncedListeners = new Set<() => void>();
  private offs: (() => void)[] = [];
  /** Awareness client ids seen per user id, to drop their cursors when they leave. */
  private clientsOf = new Map<string, Set<number>>();

  constructor(
    private socket: Socket,
    readonly documentId: string,
    readonly user: CollabUser
  ) {
    this.awareness.setLocalStateField('user', { id: user.id, name: user.name, color: user.color });

    const on = (event: string, handler: (payload: any) => void) => {
      const wrapped = (payload: any) => {
        if (payload && payload.document_id === this.documentId) handler(payload);
      };
      socket.on(event, wrapped);
      this.offs.push(() => socket.off(event, wrapped));
    };
    on('ydoc:document:state', (p) => {
      Y.applyUpdate(this.doc, toBytes(p.state), REMOTE);
      this.sessions = Array.isArray(p.sessions) ? p.sessions : [];
      const wasSynced = this.synced;
      this.synced = true;
      // Offline edits (or edits made before the state arrived) reach the others too.
      if (wasSynced || this.doc.store.clients.has(this.doc.clientID)) this.sendUpdate(Y.encodeStateAsUpdate(this.doc));
      this.sendAwareness([this.doc.clientID]);
      for (const l of this.syncedListeners) l();
    });
    on('ydoc:document:update', (p) => {
      if (p.socket_id && p.socket_id === socket.id) return;
      Y.applyUpdate(this.doc, toBytes(p.update), REMOTE);
    });
    on('ydoc:awareness:update', (p) => {
      const bytes = toBytes(p.update);
      const before = new Set(this.awareness.getStates().keys());
      try {
        applyAwarenessUpdate(this.awareness, bytes, REMOTE);
      } catch {
        this.applyJsonAwareness(bytes);
      }
      if (p.user_id) {
        const set = this.clientsOf.get(p.user_id) ?? new Set<number>();
        for (const id of this.awareness.getStates().keys()) if (!before.has(id)) set.add(id);
        this.clientsOf.set(p.user_id, set);
      }
    });
    on('ydoc:user:joined', () => this.sendAwareness([this.doc.clientID]));
    on('ydoc:user:left', (p) => {
      const ids = [...(this.clientsOf.get(p.user_id) ?? [])].filter((id) => id !== this.doc.clientID);
      if (ids.length) removeAwarenessStates(this.awareness, ids, REMOTE);
      this.clientsOf.delete(p.user_id);
    });
    const onConnect = () => this.join();
    socket.on('connect', onConnect);
    this.offs.push(() => socket.off('connect', onConnect));

    const onDocUpdate = (update: Uint8Array, origin: unknown) => {
      if (origin !== REMOTE && this.synced) this.sendUpdate(update);
    };
    this.doc.on('update', onDocUpdate);
    const onAwareness = ({ added, updated, removed }: { added: number[]; updated: number[]; removed: number[] }, origin: unknown) => {
      if (origin === REMOTE) return;
      this.sendAwareness([...added, ...updated, ...removed]);
    };
    this.awareness.on('update', onAwareness);

    if (socket.connected) this.join();
  }

  /** Open WebUI's own editor sends awareness as JSON `{clientID: state}`: accept that too. */
  private applyJsonAwareness(bytes: Uint8Array): void {
    let states: Record<string, unknown>;
    try {
      states = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      return;
    }
    if (!states || typeof states !== 'object') return;
    const updated: number[] = [];
    const added: number[] = [];
    for (const [key, state] of Object.entries(states)) {
      const id = Number(key);
      if (!Number.isInteger(id) || id === this.doc.clientID || !state || typeof state !== 'object') continue;
      (this.awareness.states.has(id) ? updated : added).push(id);
      this.awareness.states.set(id, state as Record<string, unknown>);
      this.awareness.meta.set(id, { clock: 0, lastUpdated: Date.now() });
    }
    if (added.length || updated.length) this.awareness.emit('change', [{ added, updated, removed: [] }, REMOTE]);
  }

  join(): void {
    this.socket.emit('ydoc:document:join', {
      document_id: this.documentId,
      user_id: this.user.id,
      user_name: this.user.name,
      user_color: this.user.color
    });
  }

  onSynced(l: () => void): () => void {
    this.syncedListeners.add(l);
    return () => this.syncedListeners.delete(l);
  }

  private sendUpdate(update: Uint8Array): void {
    this.socket.emit('ydoc:document:update', { document_id: this.documentId, update: Array.from(update) });
  }

  /** A save-only message: the server stores the note's content (debounced on its side). */
  saveContent(content: { md: string; html: string; json: unknown }): void {
    this.socket.emit('ydoc:document:update', { document_id: this.documentId, data: { content } });
  }

  private sendAwareness(clients: number[]): void {
    if (!this.socket.connected) return;
    const update = encodeAwarenessUpdate(this.awareness, clients);
    this.socket.emit('ydoc:awareness:update', { document_id: this.documentId, update: Array.from(update) });
  }

  destroy(): void {
    removeAwarenessStates(this.awareness, [this.doc.clientID], 'local');
    this.socket.emit('ydoc:document:leave', { document_id: this.documentId });
    for (const off of this.offs) off();
    this.awareness.destroy();
    this.doc.destroy();
  }
}
