// Small UI helpers: ids, time formatting, initials.

export const uid = (): string =>
  typeof crypto !== 'undefined' && 'randomUUID' in crypto
    ? crypto.randomUUID()
    : `${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}`;

/** Epoch seconds, ms, µs or ns (the server mixes units by table) to a Date. */
export function toDate(t: number | null | undefined): Date {
  const n = Number(t ?? 0);
  if (n > 1e17) return new Date(n / 1e6);
  if (n > 1e14) return new Date(n / 1e3);
  if (n > 1e11) return new Date(n);
  return new Date(n * 1000);
}

export function timeLabel(t: number | null | undefined): string {
  const d = toDate(t);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
}

export const initials = (name: string | undefined): string =>
  (name ?? '?')
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((p) => p[0]?.toUpperCase())
    .join('') || '?';
