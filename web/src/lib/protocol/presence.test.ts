import { describe, expect, it } from 'vitest';
import { applyPresence } from './channel';
import type { ChannelEvent } from './types';

const ev = (channel_id: string, user_id: string, online: boolean, type = 'presence'): ChannelEvent =>
  ({ channel_id, message_id: null, data: { type, data: { user_id, online } }, user: { id: user_id, name: 'X' } }) as any;

describe('applyPresence', () => {
  const members = [{ id: 'a', name: 'Ada', is_active: true }, { id: 'b', name: 'Bob', is_active: false }];
  it('marks a member online or offline in the open channel', () => {
    const on = applyPresence(members, 'c1', ev('c1', 'b', true));
    expect(on.map((m) => m.is_active)).toEqual([true, true]);
    expect(applyPresence(on, 'c1', ev('c1', 'a', false)).map((m) => m.is_active)).toEqual([false, true]);
  });
  it('ignores other channels, strangers, no-ops, other types and malformed data', () => {
    expect(applyPresence(members, 'c1', ev('c2', 'b', true))).toBe(members);
    expect(applyPresence(members, 'c1', ev('c1', 'zed', true))).toBe(members);
    expect(applyPresence(members, 'c1', ev('c1', 'a', true))).toBe(members);
    expect(applyPresence(members, 'c1', ev('c1', 'b', true, 'typing'))).toBe(members);
    expect(applyPresence(members, 'c1', { channel_id: 'c1', data: { type: 'presence', data: { user_id: 'b' } } } as any)).toBe(members);
  });
});
