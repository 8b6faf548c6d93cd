// A minimal in-memory stand-in for a socket.io-client Socket, for unit tests of the connection and collaboration.

type Handler = (...args: any[]) => void;

export class FakeSocket {
  id: string;
  connected = false;
  recovered = false;
  handlers = new Map<string, Set<Handler>>();
  sent: { event: string; payload: any }[] = [];
  /** Called for every emit, to act as a server. */
  onEmit: ((event: string, payload: any) => void) | null = null;

  constructor(id = 'sid-1') {
    this.id = id;
  }
  on(event: string, h: Handler) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event)!.add(h);
    return this;
  }
  off(event: string, h: Handler) {
    this.handlers.get(event)?.delete(h);
    return this;
  }
  emit(event: string, payload?: any) {
    this.sent.push({ event, payload });
    this.onEmit?.(event, payload);
    return this;
  }
  connect() {
    this.connected = true;
    this.fire('connect');
    return this;
  }
  disconnect() {
    this.connected = false;
    this.fire('disconnect', 'io client disconnect');
    return this;
  }
  /** Server side: deliver an event to this socket's listeners. */
  fire(event: string, ...args: any[]) {
    for (const h of [...(this.handlers.get(event) ?? [])]) h(...args);
  }
  sentOf(event: string) {
    return this.sent.filter((s) => s.event === event).map((s) => s.payload);
  }
}
