// Application state shared by the pages: the signed-in session, the API client, the live connection, the route,
// toasts and pending event calls. Components read it; the protocol library does the protocol work.

import { Api, Connection, type ConnectionState, type EventCall, type Session } from './protocol';

const STORAGE_KEY = 'chatwire.session';

export interface Toast {
  id: number;
  type: string;
  content: string;
}

export interface Confirmation {
  title: string;
  message: string;
  action: string;
  danger: boolean;
  resolve: (ok: boolean) => void;
}

export interface PendingCall {
  id: number;
  call: EventCall;
  resolve: (answer: unknown) => void;
}

function loadSession(): Session | null {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

class AppState {
  session = $state<Session | null>(loadSession());
  connection = $state<ConnectionState>('offline');
  path = $state(location.pathname);
  toasts = $state<Toast[]>([]);
  calls = $state<PendingCall[]>([]);
  confirmation = $state<Confirmation | null>(null);
  api = new Api(this.session?.token ?? null);
  conn: Connection | null = null;
  private toastSeq = 0;
  private callSeq = 0;

  constructor() {
    addEventListener('popstate', () => (this.path = location.pathname));
    if (this.session) this.start(this.session);
  }

  navigate(path: string, replace = false): void {
    if (path === this.path) return;
    if (replace) history.replaceState(null, '', path);
    else history.pushState(null, '', path);
    this.path = path;
  }

  /** True while the live connection is up (sending works now). */
  get online(): boolean {
    return this.connection === 'connected' || this.connection === 'recovered';
  }

  /** A confirmation in the app's own dialog (keyboard and screen-reader friendly, unlike `window.confirm`). */
  ask(message: string, { title = 'Are you sure?', action = 'Confirm', danger = false } = {}): Promise<boolean> {
    this.confirmation?.resolve(false);
    return new Promise((resolve) => {
      this.confirmation = {
        title, message, action, danger,
        resolve: (ok) => {
          this.confirmation = null;
          resolve(ok);
        }
      };
    });
  }

  toast(content: string, type = 'info'): void {
    const id = ++this.toastSeq;
    this.toasts = [...this.toasts, { id, type, content }];
    setTimeout(() => (this.toasts = this.toasts.filter((t) => t.id !== id)), 5000);
  }

  /** Signed in: remember the session and open the live connection. */
  start(session: Session): void {
    this.session = session;
    localStorage.setItem(STORAGE_KEY, JSON.stringify(session));
    this.api.token = session.token;
    this.conn?.close();
    const conn = new Connection(session.token);
    this.conn = conn;
    this.connection = conn.state;
    conn.onState((s) => {
      this.connection = s;
      if (s === 'unauthorized') {
        this.toast('Your session has expired. Please sign in again.', 'error');
        this.signOut(false);
      }
    });
    conn.onChat((event) => {
      if (event?.data?.type === 'notification') {
        const d = event.data.data ?? {};
        this.toast(String(d.content ?? ''), String(d.type ?? 'info'));
      }
    });
    conn.setEventCallHandler((call) => this.answerCall(call));
    conn.connect();
  }

  private answerCall(call: EventCall): Promise<unknown> {
    if (call?.data?.type === 'execute') return runCode(call.data.data?.code);
    if (!['confirmation', 'input'].includes(call?.data?.type)) return Promise.reject(new Error(`unsupported event call ${call?.data?.type}`));
    const id = ++this.callSeq;
    return new Promise((resolve) => {
      const pending: PendingCall = {
        id,
        call,
        resolve: (answer) => {
          // $state wraps stored objects in proxies: compare ids, not identities.
          this.calls = this.calls.filter((c) => c.id !== id);
          resolve(answer);
        }
      };
      this.calls = [...this.calls, pending];
    });
  }

  async signOut(revoke = true): Promise<void> {
    if (revoke) await this.api.signout().catch(() => undefined);
    this.conn?.close();
    this.conn = null;
    this.session = null;
    this.api.token = null;
    this.connection = 'offline';
    localStorage.removeItem(STORAGE_KEY);
    this.navigate('/');
  }
}

/** `execute` event calls run code in the page, as Open WebUI's client does; the result (or error) is the answer. */
async function runCode(code: unknown): Promise<unknown> {
  try {
    const fn = new Function(`return (async () => { ${String(code ?? '')} })()`);
    return await fn();
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

export const app = new AppState();
